// The README shows examples/track.ts rather than a copy of its own: its TypeScript block under "From
// TypeScript, with the generated client" is a run of lines of the file, and the variables the example
// reads are the ones the README names.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = path.resolve(import.meta.dirname, "../..");

describe("the README's TypeScript example", () => {
  it("is taken from examples/track.ts, and names every variable the example reads", async () => {
    const [readme, example] = await Promise.all([readFile(path.join(ROOT, "README.md"), "utf8"), readFile(path.join(ROOT, "examples/track.ts"), "utf8")]);
    const section = readme.slice(readme.indexOf("### From TypeScript, with the generated client"));
    const block = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
    expect(block).toBeDefined();
    expect(example).toContain(block!);
    const variables = [...example.matchAll(/process\.env\["(\w+)"\]/g)].map((m) => m[1]!);
    expect(new Set(variables)).toEqual(new Set(["METERD_URL", "METERD_KEY"]));
    const prose = section.slice(0, section.indexOf("\n### ", 5));
    for (const name of variables) expect(prose.replace(block!, "")).toContain(`\`${name}\``);
  });
});
