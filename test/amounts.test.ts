import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { formatUnits, parseUnits, U64_MAX } from "../src/bylaws/amounts.ts";

// Amounts typed by members become u64 base units exactly, or a clear refusal.

describe("decimal amounts to u64 base units", () => {
  it("converts exactly, without a float in between", () => {
    assert.equal(parseUnits("12.5", 9), 12_500_000_000n);
    assert.equal(parseUnits("0.000000001", 9), 1n);
    assert.equal(parseUnits("7", 0), 7n);
    assert.equal(parseUnits("1.10", 1), 11n, "trailing zeros are not extra decimals");
    assert.equal(parseUnits(" 3_000.25 ", 2), 300_025n);
    // The largest u64, typed in whole units of a 9-decimal mint: one past it is refused.
    assert.equal(parseUnits("18446744073.709551615", 9), U64_MAX);
    assert.equal(parseUnits("18446744073709551615", 0), U64_MAX);
    assert.equal(formatUnits(U64_MAX, 9), "18446744073.709551615");
    assert.equal(formatUnits(12_500_000_000n, 9), "12.5");
    assert.equal(formatUnits(1n, 6), "0.000001");
  });

  it("refuses what the mint cannot hold, saying why", () => {
    const cases: [string, number, RegExp][] = [
      ["1.2345678901", 9, /9 decimal places; "1.2345678901" has 10/],
      ["0.5", 0, /no decimal places: give a whole number/],
      ["-5", 6, /cannot be negative/],
      ["18446744073.709551616", 9, /more than the largest amount .*18446744073\.709551615/],
      ["18446744073709551616", 0, /more than the largest amount/],
      ["999999999999999999999999", 0, /more than the largest amount/],
      ["0", 6, /more than zero/],
      ["0.000", 6, /more than zero/],
      ["", 6, /required/],
      ["1e6", 6, /decimal number such as 12.5/],
      ["12,5", 6, /decimal number/],
      [".", 6, /decimal number/],
      ["0x10", 6, /decimal number/],
    ];
    for (const [text, decimals, why] of cases) assert.throws(() => parseUnits(text, decimals), why, `${text} at ${decimals}`);
  });
});
