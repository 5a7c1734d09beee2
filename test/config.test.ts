import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, loadConfig } from "../src/config.ts";

describe("loadConfig", () => {
  it("MUSTER_BATCH_DELIVERY: on unless 0 or false; any other value stops start-up with one line", () => {
    assert.equal(loadConfig({}).batchDelivery, true);
    assert.equal(loadConfig({ MUSTER_BATCH_DELIVERY: "" }).batchDelivery, true);
    assert.equal(loadConfig({ MUSTER_BATCH_DELIVERY: "1" }).batchDelivery, true);
    assert.equal(loadConfig({ MUSTER_BATCH_DELIVERY: "0" }).batchDelivery, false);
    assert.equal(loadConfig({ MUSTER_BATCH_DELIVERY: "false" }).batchDelivery, false);
    assert.throws(() => loadConfig({ MUSTER_BATCH_DELIVERY: "off" }), (e: unknown) => e instanceof ConfigError && /MUSTER_BATCH_DELIVERY must be 1 or 0; got "off"/.test(e.message));
  });
});
