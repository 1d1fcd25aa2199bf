// The development key: made on the first start without METERD_SECRET_KEYS, then reused.
import { randomBytes } from "node:crypto";
import { link, mkdir, readFile, rm, writeFile } from "node:fs/promises";
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
  // Written whole to a file of its own, then linked into place: link() never overwrites, and the key
  // appears with its content at once. Writing the key file itself with "wx" left a moment when a
  // concurrent start found it created but still empty.
  const draft = `${file}.${process.pid}.${randomBytes(6).toString("hex")}`;
  await writeFile(draft, `${key}\n`, { mode: 0o600, flag: "wx" });
  try {
    await link(draft, file);
    return { key, created: true };
  } catch (err) {
    if (!isNodeError(err, "EEXIST")) throw err;
    const raced = await readKey(file);
    if (raced === null) throw new Error(`${file} exists but holds no key`);
    return { key: raced, created: false };
  } finally {
    await rm(draft, { force: true });
  }
}
