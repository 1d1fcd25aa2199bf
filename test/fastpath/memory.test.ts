import { MemoryFastPath } from "../../src/fastpath/memory.js";
import { fastPathContract } from "./contract.js";

fastPathContract("MemoryFastPath", async () => new MemoryFastPath());
