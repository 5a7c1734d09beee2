/** Base units as a decimal string with `decimals` places, exact (no floats). */
export function formatUnits(amount: bigint, decimals: number): string {
  const negative = amount < 0n;
  const digits = (negative ? -amount : amount).toString().padStart(decimals + 1, "0");
  const whole = digits.slice(0, digits.length - decimals);
  const fraction = decimals > 0 ? digits.slice(-decimals).replace(/0+$/, "") : "";
  return `${negative ? "-" : ""}${whole}${fraction ? `.${fraction}` : ""}`;
}

/** Parses "12.5" into base units, refusing more places than the mint has. */
export function parseUnits(text: string, decimals: number): bigint {
  const m = /^(\d+)(?:\.(\d+))?$/.exec(text.trim());
  if (!m) throw new RangeError(`amount must be a positive decimal number; got ${JSON.stringify(text)}`);
  const fraction = m[2] ?? "";
  if (fraction.length > decimals) throw new RangeError(`amount has more than ${decimals} decimal places: ${text}`);
  const value = BigInt(m[1]! + fraction.padEnd(decimals, "0"));
  if (value > 0xffffffffffffffffn) throw new RangeError(`amount does not fit in 64 bits: ${text}`);
  return value;
}
