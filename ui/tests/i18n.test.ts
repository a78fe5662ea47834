// The message catalogues: the same keys in every language, every key the
// code asks for exists, placeholders match, the page titles of the
// original are there — and the lint rule that keeps literal text out of
// components really fires.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

import { ESLint } from "eslint";

import { catalogues, format, pickLocale, splitCode } from "@/lib/i18n";
import { en } from "@/lib/i18n/en";
import { zhCN } from "@/lib/i18n/zh-CN";

const ROOT = join(__dirname, "..");

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return /\.(ts|tsx)$/.test(name) ? [path] : [];
  });
}

// The variables a message reads, as `{name}` or as the count of `{name, plural, …}`.
const placeholders = (s: string) => [...new Set([...s.matchAll(/\{(\w+)(?:\}|, plural,)/g)].map((m) => m[1]))].sort();
const codeParts = (s: string) => splitCode(s).filter((p) => p.code).map((p) => p.text);

/** The keys the code passes to `t("…")` and to `messageKey="…"`, each with its files. */
function usedKeys(): { viaT: Set<string>; viaMessageKey: Set<string> } {
  const files = [...sources(join(ROOT, "app")), ...sources(join(ROOT, "components")), ...sources(join(ROOT, "hooks"))];
  const viaT = new Set<string>();
  const viaMessageKey = new Set<string>();
  for (const file of files) {
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/\bt\(\s*"([a-zA-Z0-9.\-]+)"/g)) viaT.add(m[1]!);
    for (const m of text.matchAll(/messageKey="([a-zA-Z0-9.\-]+)"/g)) viaMessageKey.add(m[1]!);
  }
  return { viaT, viaMessageKey };
}

describe("catalogues", () => {
  it("have the same keys, none empty", () => {
    expect(Object.keys(zhCN).sort()).toEqual(Object.keys(en).sort());
    for (const [locale, messages] of Object.entries(catalogues)) {
      for (const [key, text] of Object.entries(messages)) {
        expect(text.trim(), `${locale} ${key}`).not.toBe("");
      }
    }
  });

  it("use the same placeholders in every language", () => {
    for (const key of Object.keys(en) as (keyof typeof en)[]) {
      expect(placeholders(zhCN[key]), key).toEqual(placeholders(en[key]));
    }
  });

  it("carry the original's Chinese page titles", () => {
    expect(zhCN["dashboard.title"]).toBe("Aegis 服务监控");
    expect(zhCN["manage.title"]).toBe("服务定义管理");
    expect(zhCN["manage.new"]).toBe("+ 新建服务定义");
  });

  it("contain every key the code asks for", () => {
    const { viaT, viaMessageKey } = usedKeys();
    const used = new Set([...viaT, ...viaMessageKey]);
    expect(used.size).toBeGreaterThan(100);
    const missing = [...used].filter((k) => !(k in en));
    expect(missing).toEqual([]);
  });

  it("show code (backticks) only through <Message>, which sets it as code", () => {
    // t() gives plain text: a backticked command would show its backticks.
    const plain = [...usedKeys().viaT].filter((k) => k in en && en[k as keyof typeof en].includes("`"));
    expect(plain).toEqual([]);
  });

  it("call the election epoch a leader's term (任期) in Chinese, never an era (纪元)", () => {
    const epochKeys = (Object.keys(en) as (keyof typeof en)[]).filter((k) => /\bepoch\b/i.test(en[k]));
    expect(epochKeys.length).toBeGreaterThan(0);
    for (const key of epochKeys) expect(zhCN[key], key).toContain("任期");
    expect(Object.entries(zhCN).filter(([, text]) => text.includes("纪元"))).toEqual([]);
  });

  it("keep commands and paths the same in every language", () => {
    for (const key of Object.keys(en) as (keyof typeof en)[]) {
      expect(codeParts(zhCN[key]), key).toEqual(codeParts(en[key]));
    }
  });
});

describe("splitCode()", () => {
  it("splits a message into text and code", () => {
    expect(splitCode("Run `aegis up` in {dir}.", { dir: "/srv" })).toEqual([
      { code: false, text: "Run " },
      { code: true, text: "aegis up" },
      { code: false, text: " in /srv." },
    ]);
  });

  it("reads a backtick inside a value as text, and an unpaired one too", () => {
    expect(splitCode("Failed ({message})", { message: "bad `x`" })).toEqual([{ code: false, text: "Failed (bad `x`)" }]);
    expect(splitCode("`a` and ` alone")).toEqual([
      { code: true, text: "a" },
      { code: false, text: " and ` alone" },
    ]);
  });
});

describe("t()", () => {
  it("fills placeholders and leaves unknown ones visible", () => {
    expect(format("Gone {ago} ({x})", { ago: "3 s ago" })).toBe("Gone 3 s ago ({x})");
  });

  it("says one thing and many things in English, and counts alike in Chinese", () => {
    const streams = "{n, plural, one {# stream} other {# streams}} of {name}";
    expect(format(streams, { n: 1, name: "n1" }, "en")).toBe("1 stream of n1");
    expect(format(streams, { n: 0, name: "n1" }, "en")).toBe("0 streams of n1");
    expect(format(streams, { n: 3, name: "n1" }, "en")).toBe("3 streams of n1");
    // A language without the category takes `other`.
    expect(format(streams, { n: 1, name: "n1" }, "zh-CN")).toBe("1 streams of n1");
    // Placeholders inside a branch are filled; no count leaves it visible.
    expect(format("{n, plural, one {# of {total}} other {# of {total}}}", { n: 1, total: 3 })).toBe("1 of 3");
    expect(format(streams, { name: "n1" })).toBe("{n, plural, one {# stream} other {# streams}} of n1");
  });

  it("gives every count in the English catalogue its singular", () => {
    expect(format(en["dashboard.instances"], { count: 1 }, "en")).toBe("1 instance");
    expect(format(en["dashboard.instances"], { count: 2 }, "en")).toBe("2 instances");
    expect(format(zhCN["dashboard.instances"], { count: 1 }, "zh-CN")).toBe("1 个实例");
    expect(format(en["nats.ok"], { up: 1, total: 1, streams: 1 }, "en")).toBe("NATS: 1 of 1 server up · 1 stream, with a leader");
    expect(format(en["nats.problem.summary"], { up: 0, total: 1, leaderless: 1, streams: 1 }, "en")).toBe(
      "0 of 1 server up · 1 of 1 stream without a leader",
    );
    expect(format(en["chart.summary"], { title: "Latency", points: 1, latest: "2 ms" }, "en")).toBe("Latency: 1 point; latest 2 ms");
  });

  it("picks the browser's language", () => {
    expect(pickLocale(["zh-TW", "en"])).toBe("zh-CN");
    expect(pickLocale(["zh-CN"])).toBe("zh-CN");
    expect(pickLocale(["en-GB", "zh-CN"])).toBe("en");
    expect(pickLocale(["fr-FR"])).toBe("en");
  });
});

describe("the lint rule against hard-coded strings", () => {
  it("fails a component that hard-codes text", async () => {
    const eslint = new ESLint({ cwd: ROOT });
    const [result] = await eslint.lintText(
      'export function Hello() {\n  return <p>Hello operator</p>;\n}\n',
      { filePath: join(ROOT, "components/dashboard/hello.tsx") },
    );
    expect(result!.messages.map((m) => m.ruleId)).toContain("react/jsx-no-literals");
  }, 30_000);
});
