// The one time format of the UI: the 24-hour clock in every view (event
// lists, the failover timeline, chart axes, the definitions table and
// history), the date in one format per language. Dates are built from
// local fields, so the expectations hold in any time zone.
import { timeTickLabels } from "@/lib/chart-ticks";
import { ago, agoAtLeast, agoAtMost, clock, clockOrDate, dateTime, timeMs } from "@/lib/format";
import { format } from "@/lib/i18n";
import { en } from "@/lib/i18n/en";

const evening = new Date(2026, 11, 4, 18, 40, 58, 337);
const afterMidnight = new Date(2026, 11, 5, 0, 5, 7, 9);

describe("clock()", () => {
  it("reads 24-hour time in every language", () => {
    for (const locale of ["en", "zh-CN"]) {
      expect(clock(evening, locale)).toBe("18:40:58");
      expect(clock(evening, locale, { seconds: false })).toBe("18:40");
      expect(clock(evening.toISOString(), locale, { ms: true })).toBe("18:40:58.337");
    }
  });

  it("shows midnight as 00, not 24", () => {
    expect(clock(afterMidnight, "en")).toBe("00:05:07");
    expect(timeMs(afterMidnight.toISOString(), "en", afterMidnight.getTime())).toBe("00:05:07.009");
  });

  it("returns what it cannot read as it came", () => {
    expect(clock("not a time", "en")).toBe("not a time");
    expect(dateTime("", "en")).toBe("");
  });
});

describe("dateTime()", () => {
  it("puts the language's date before the same 24-hour time", () => {
    expect(dateTime(evening.toISOString(), "en")).toBe("Dec 4, 2026, 18:40:58");
    expect(dateTime(evening.toISOString(), "zh-CN")).toBe("2026年12月4日 18:40:58");
  });
});

describe("clockOrDate()", () => {
  it("shows the time alone for today and adds the date for another day", () => {
    const downAt = new Date(2026, 11, 3, 19, 29, 58);
    expect(clockOrDate(downAt.toISOString(), "en", new Date(2026, 11, 3, 23, 59, 59).getTime())).toBe("19:29:58");
    expect(clockOrDate(downAt.toISOString(), "en", new Date(2026, 11, 4, 0, 0, 1).getTime())).toBe("Dec 3, 2026, 19:29:58");
    expect(clockOrDate(downAt.getTime(), "zh-CN", new Date(2026, 11, 5).getTime())).toBe("2026年12月3日 19:29:58");
    expect(clockOrDate("soon", "en")).toBe("soon");
  });
});

describe("timeMs()", () => {
  it("shows the time alone for today and adds the date for another day", () => {
    const sameDay = new Date(2026, 11, 4, 23, 59).getTime();
    expect(timeMs(evening.toISOString(), "en", sameDay)).toBe("18:40:58.337");
    const nextDay = new Date(2026, 11, 5, 9, 0).getTime();
    expect(timeMs(evening.toISOString(), "en", nextDay)).toBe("Dec 4, 2026, 18:40:58.337");
  });
});

describe("timeTickLabels()", () => {
  const at = (h: number, m: number, s = 0) => new Date(2026, 11, 4, h, m, s).getTime() / 1000;

  it("labels ticks seconds apart with seconds, on the 24-hour clock", () => {
    expect(timeTickLabels([at(18, 39, 50), at(18, 40, 0), at(18, 40, 10)], 10, "en")).toEqual(["18:39:50", "18:40:00", "18:40:10"]);
  });

  it("labels ticks minutes apart without seconds", () => {
    expect(timeTickLabels([at(18, 55), at(19, 0), at(19, 5)], 300, "en")).toEqual(["18:55", "19:00", "19:05"]);
  });
});

describe("agoAtLeast()", () => {
  const t = (key: string, vars?: Record<string, string | number>) => format(en[key as keyof typeof en], vars, "en");
  it("rounds an age up: it stands until the next tick and must not read younger than it is", () => {
    expect(agoAtLeast(t, 0)).toBe("just now");
    expect(agoAtLeast(t, 2001)).toBe("3 s ago");
    expect(agoAtLeast(t, 3000)).toBe("3 s ago");
    expect(ago(t, new Date(0).toISOString(), 2999)).toBe("2 s ago");
  });
});

describe("agoAtMost()", () => {
  const t = (key: string, vars?: Record<string, string | number>) => format(en[key as keyof typeof en], vars, "en");
  it("says a bound, every unit rounded up: a minute and a half is at most 2 min", () => {
    expect(agoAtMost(t, 2001)).toBe("at most 3 s ago");
    expect(agoAtMost(t, 59_000)).toBe("at most 59 s ago");
    expect(agoAtMost(t, 90_000)).toBe("at most 2 min ago");
    expect(agoAtMost(t, 3_700_000)).toBe("at most 2 h ago");
    expect(agoAtMost(t, 0)).toBe("just now");
  });
});
