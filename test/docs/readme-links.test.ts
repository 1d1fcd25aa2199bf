// Every link of the README and of docs/ leads somewhere: an anchor names a heading of its page (as
// GitHub makes anchors from headings), a relative path names a file of the repository.
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = path.resolve(import.meta.dirname, "../..");

/** The text outside fenced code blocks, so that a `# comment` in a shell block is not a heading. */
function prose(markdown: string): string {
  let fenced = false;
  return markdown
    .split("\n")
    .filter((line) => {
      if (/^\s*```/.test(line)) {
        fenced = !fenced;
        return false;
      }
      return !fenced;
    })
    .join("\n");
}

/** GitHub's anchors: lower case, punctuation dropped, spaces to hyphens, "-1", "-2"... for repeats. */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  for (const m of prose(markdown).matchAll(/^#{1,6} (.+)$/gm)) {
    const slug = m[1]!.trim().toLowerCase().replace(/[^\p{L}\p{N}\- _]/gu, "").replace(/ /g, "-");
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    result.add(count === 0 ? slug : `${slug}-${count}`);
  }
  return result;
}

function links(markdown: string): string[] {
  return [...prose(markdown).matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!);
}

describe.each(["README.md", "docs/performance.md"])("the links of %s", (file) => {
  it("lead to a heading or a file that exists", async () => {
    const text = await readFile(path.join(ROOT, file), "utf8");
    const broken: string[] = [];
    for (const link of links(text)) {
      if (/^[a-z]+:/.test(link)) continue;
      const [target, anchor] = link.split("#") as [string, string | undefined];
      const targetFile = target === "" ? path.join(ROOT, file) : path.resolve(path.dirname(path.join(ROOT, file)), target);
      if (!existsSync(targetFile)) {
        broken.push(`${link}: no file ${path.relative(ROOT, targetFile)}`);
        continue;
      }
      if (anchor !== undefined && !anchors(await readFile(targetFile, "utf8")).has(anchor)) {
        broken.push(`${link}: no heading with that anchor in ${path.relative(ROOT, targetFile)}`);
      }
    }
    expect(broken).toEqual([]);
  });
});
