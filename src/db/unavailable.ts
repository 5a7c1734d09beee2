// Apart from database.ts so the CLI can recognise the error without loading the drivers.
/** The database cannot be opened or reached: a one-line reason for the operator, no password in it. */
export class DatabaseUnavailableError extends Error {
  override name = "DatabaseUnavailableError";
}

/** The URL as it may be printed: the password is dropped, the user kept. */
export function redactUrl(databaseUrl: string): string {
  try {
    const u = new URL(databaseUrl);
    if (!u.password) return databaseUrl;
    u.password = "";
    return u.href;
  } catch {
    return databaseUrl.replace(/\/\/([^:@/]*):[^@/]*@/, "//$1@");
  }
}
