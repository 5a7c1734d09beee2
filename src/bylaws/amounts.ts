import { DomainError } from "../domain-error.ts";

// Amounts typed by people ("12.5") against amounts on chain (u64 base units).
// The conversion is done on the digits as text, never through a JS number,
// so 18446744073709551615 base units survive exactly.

export const U64_MAX = 18_446_744_073_709_551_615n;

export class AmountError extends DomainError<"invalid"> {
  override name = "AmountError";
}

/**
 * Parses a decimal amount in whole units of a mint with `decimals` places
 * into base units. Refuses (with a message a member can act on) a negative
 * amount, zero, more decimal places than the mint has, anything that is not a
 * plain decimal number, and more than a u64 holds.
 */
export function parseUnits(text: string, decimals: number): bigint {
  if (!Number.isInteger(decimals) || decimals < 0 || decimals > 19) throw new AmountError("invalid", `a mint has 0 to 19 decimal places; got ${decimals}`);
  const t = text.trim().replace(/_/g, "");
  if (t === "") throw new AmountError("invalid", "an amount is required");
  if (/^-/.test(t)) throw new AmountError("invalid", `an amount cannot be negative; got ${JSON.stringify(text.trim())}`);
  const m = /^\+?(\d*)(?:\.(\d*))?$/.exec(t);
  if (!m || (m[1] === "" && (m[2] ?? "") === "")) throw new AmountError("invalid", `an amount is a decimal number such as 12.5; got ${JSON.stringify(text.trim())}`);
  const whole = m[1] || "0";
  const frac = (m[2] ?? "").replace(/0+$/, "");
  if (frac.length > decimals) {
    throw new AmountError("invalid", decimals === 0
      ? `this mint has no decimal places: give a whole number; got ${JSON.stringify(text.trim())}`
      : `this mint has ${decimals} decimal places; ${JSON.stringify(text.trim())} has ${frac.length}`);
  }
  if (whole.replace(/^0+/, "").length > 20) throw new AmountError("invalid", `${text.trim()} is more than the largest amount a token account holds (u64)`);
  const units = BigInt(whole) * 10n ** BigInt(decimals) + BigInt(frac.padEnd(decimals, "0") || "0");
  if (units > U64_MAX) throw new AmountError("invalid", `${text.trim()} is more than the largest amount a token account holds (${formatUnits(U64_MAX, decimals)})`);
  if (units === 0n) throw new AmountError("invalid", "an amount must be more than zero");
  return units;
}

/** Base units as a decimal in whole units, without trailing zeros ("12.5", "3"). */
export function formatUnits(units: bigint, decimals: number): string {
  if (decimals === 0) return units.toString();
  const s = units.toString().padStart(decimals + 1, "0");
  const frac = s.slice(-decimals).replace(/0+$/, "");
  return frac ? `${s.slice(0, -decimals)}.${frac}` : s.slice(0, -decimals);
}
