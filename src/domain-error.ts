/**
 * What a domain function refuses with: a code the HTTP layer and the CLI turn
 * into a status or an exit, and a message written for the person acting.
 * Each feature names its own subclass (and narrows the codes it uses), so
 * callers can still tell a refusal about members from one about bylaws.
 */
export class DomainError<C extends string = "invalid" | "forbidden" | "not_found" | "conflict"> extends Error {
  readonly code: C;
  constructor(code: C, message: string) {
    super(message);
    this.code = code;
  }
}
