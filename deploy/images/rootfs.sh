#!/bin/sh
# Assembles the root filesystem of the `aegis` runtime image into OUT: the
# dynamically linked `aegis` binary and exactly what it needs to run in a
# `FROM scratch` image, nothing else (no shell, no package manager):
#
#   /usr/local/bin/aegis                the binary
#   the shared libraries `ldd` names    libc, libm, libgcc_s and the loader
#   libnss_files, libnss_dns, libresolv glibc resolves host names through NSS
#                                       modules loaded at run time, which
#                                       `ldd` cannot see: without them
#                                       `nats-0:4222` does not resolve
#   /etc/nsswitch.conf                  hosts: files dns (the modules above)
#   /etc/passwd, /etc/group             root and `nonroot` (uid/gid 65532)
#   /etc/ssl/certs/ca-certificates.crt  TLS to NATS with a public CA
#   /usr/share/aegis/ui                 the UI's static export (`aegis api
#                                       --ui-dir /usr/share/aegis/ui`)
#   /tmp                                mode 1777 (mount a tmpfs when the root
#                                       filesystem is read-only)
#
# The libraries are copied from the system that built the binary, so run it
# there: on the build host (scripts/images.sh) or in the builder stage of
# deploy/images/Containerfile. POSIX sh, so it runs in any builder image.
#
#   deploy/images/rootfs.sh BINARY UI_DIR OUT
set -eu

[ "$#" -eq 3 ] || { echo "usage: $0 BINARY UI_DIR OUT" >&2; exit 2; }
BINARY="$1"
UI_DIR="$2"
OUT="$3"

[ -x "$BINARY" ] || { echo "rootfs: $BINARY is not an executable" >&2; exit 1; }
[ -f "$UI_DIR/index.html" ] || { echo "rootfs: $UI_DIR/index.html is missing; build the UI (make ui)" >&2; exit 1; }
command -v ldd >/dev/null 2>&1 || { echo "rootfs: ldd is required" >&2; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT/usr/local/bin" "$OUT/etc/ssl/certs" "$OUT/usr/share/aegis" "$OUT/tmp"
chmod 1777 "$OUT/tmp"
cp "$BINARY" "$OUT/usr/local/bin/aegis"
# Debug info is most of a debug build (over 200 MB of 260); symbols stay, so a
# panic's backtrace still names functions.
if command -v strip >/dev/null 2>&1; then strip --strip-debug "$OUT/usr/local/bin/aegis"; fi
chmod 0755 "$OUT/usr/local/bin/aegis"

# Every library path ldd prints for FILE ("name => /path (addr)" and the
# loader's "/path (addr)" line); a library ldd cannot find is an error.
libs_of() {
  if ldd "$1" | grep -q 'not found'; then
    echo "rootfs: ldd $1 cannot find a library:" >&2
    ldd "$1" >&2
    exit 1
  fi
  ldd "$1" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p'
}

# Copies a library to the same path in OUT, following symlinks, so the
# loader finds it where the binary's ldd said.
copy_lib() {
  [ -e "$OUT$1" ] && return 0
  mkdir -p "$OUT$(dirname "$1")"
  cp -L "$1" "$OUT$1"
}

libc_dir=""
for lib in $(libs_of "$BINARY"); do
  copy_lib "$lib"
  case "$lib" in */libc.so.*) libc_dir="$(dirname "$lib")" ;; esac
done
[ -n "$libc_dir" ] || { echo "rootfs: $BINARY does not link libc dynamically; nothing to resolve names with" >&2; exit 1; }

# The NSS modules and the resolver sit next to libc; with their own
# dependencies (libc and the loader, already there).
for name in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2; do
  [ -e "$libc_dir/$name" ] || { echo "rootfs: $libc_dir/$name is missing" >&2; exit 1; }
  copy_lib "$libc_dir/$name"
  for dep in $(libs_of "$libc_dir/$name"); do copy_lib "$dep"; done
done

cat >"$OUT/etc/nsswitch.conf" <<'EON'
passwd: files
group:  files
hosts:  files dns
EON
cat >"$OUT/etc/passwd" <<'EON'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EON
cat >"$OUT/etc/group" <<'EON'
root:x:0:
nonroot:x:65532:
EON

ca=/etc/ssl/certs/ca-certificates.crt
if [ -f "$ca" ]; then
  cp -L "$ca" "$OUT$ca"
else
  echo "rootfs: $ca is missing (install ca-certificates); TLS with a public CA will fail" >&2
fi

cp -R "$UI_DIR" "$OUT/usr/share/aegis/ui"
# Readable by any uid: the image runs as a non-root user.
chmod -R a+rX "$OUT"
