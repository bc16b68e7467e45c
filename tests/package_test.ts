/**
 * Weft as a package: `deno.json` names it, `deno publish --dry-run` passes
 * its checks (slow types included) offline, and an application outside this
 * repository imports it by a local path, as the README shows.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const decoder = new TextDecoder();

async function deno(args: string[], cwd: string) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

Deno.test("package: deno.json names the package, its version and its entry point", async () => {
  const config = JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json")));
  assert.equal(config.name, "@weft/weft");
  assert.match(config.version, /^\d+\.\d+\.\d+$/);
  assert.equal(config.exports["."], "./mod.ts");
});

Deno.test("package: deno publish --dry-run passes, slow types included, and ships no tests", async () => {
  const { code, stdout, stderr } = await deno(["publish", "--dry-run", "--allow-dirty"], ROOT);
  const out = stdout + stderr;
  assert.equal(code, 0, out);
  assert.match(out, /Checking for slow types in the public API/);
  assert.match(out, /Dry run complete/);
  assert.doesNotMatch(out, /error\[/);
  const shipped = [...out.matchAll(/^\s+(file:\/\/\S+) \(/gm)].map((m) =>
    fileURLToPath(m[1]).slice(ROOT.length)
  );
  assert.ok(shipped.includes("mod.ts"), shipped.join("\n"));
  assert.ok(shipped.includes("steps/workflow.ts"));
  assert.ok(!shipped.some((f) => f.startsWith("tests/") || f.endsWith("_test.ts")), "no tests");
  assert.ok(!shipped.some((f) => f.startsWith("bench/")), "no benchmarks");
});

Deno.test("package: an application outside the repository imports Weft by a local path", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_app_" });
  try {
    // What the README's "as a local path" shows: one import map entry. Weft's own
    // dependencies resolve through its deno.json.
    await Deno.writeTextFile(
      join(dir, "deno.json"),
      JSON.stringify({
        unstable: ["kv"],
        imports: { "@weft/weft": join(ROOT, "mod.ts"), zod: "npm:zod@^4.1.0" },
      }),
    );
    await Deno.writeTextFile(
      join(dir, "main.ts"),
      `import { z } from "zod";
import { createEngine, workflow } from "@weft/weft";
const greet = workflow("greet", { input: z.object({ name: z.string() }) })
  .step("hello", ({ input }) => \`hello \${input.name}\`)
  .step("shout", { needs: ["hello"] }, ({ results }) => results.hello.toUpperCase());
const kv = await Deno.openKv(":memory:");
const engine = await createEngine({ kv, workflows: [greet] });
const run = await engine.start("greet", { name: "ada" });
console.log(JSON.stringify((await engine.result(run.id)).output));
await engine.close();
kv.close();
`,
    );
    const { code, stdout, stderr } = await deno(["run", "--allow-all", "main.ts"], dir);
    assert.equal(code, 0, stderr);
    assert.equal(stdout.trim(), '"HELLO ADA"');
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
