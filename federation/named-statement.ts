// Moved to src/db (prepared.ts names its statements too); kept for the queue's imports.
export { executeNamed, named } from "../src/db/named-statement.ts";
