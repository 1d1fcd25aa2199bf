// The development key: made on the first start without METERD_SECRET_KEYS, then reused.
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";

const FILE_NAME = "dev-key";

function isNodeError(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}

async function readKey(file: string): Promise<string | null> {
  try {
    const key = (await readFile(file, "utf8")).trim();
    return key === "" ? null : key;
  } catch (err) {
    if (isNodeError(err, "ENOENT")) return null;
    throw err;
  }
}

/** Reads `<dataDir>/dev-key`, or makes a new random `sk_dev_...` key there (mode 0600). */
export async function loadOrCreateDevKey(dataDir: string): Promise<{ key: string; created: boolean }> {
  const file = path.join(dataDir, FILE_NAME);
  const existing = await readKey(file);
  if (existing !== null) return { key: existing, created: false };

  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const key = `sk_dev_${randomBytes(32).toString("base64url")}`;
  try {
    // "wx": never overwrite a key that another process has just written.
    await writeFile(file, `${key}\n`, { mode: 0o600, flag: "wx" });
    return { key, created: true };
  } catch (err) {
    if (!isNodeError(err, "EEXIST")) throw err;
    const raced = await readKey(file);
    if (raced === null) throw new Error(`${file} exists but holds no key`);
    return { key: raced, created: false };
  }
}
