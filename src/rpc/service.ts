// A service descriptor paired with its connect-es implementation: what both listeners serve.
import type { DescService } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";

/** A service descriptor and its connect-es implementation, served by both listeners. */
export interface RpcService {
  service: DescService;
  impl: object;
}

/** Pairs a service with its implementation, type-checked against the descriptor. */
export function rpcService<S extends DescService>(service: S, impl: Partial<ServiceImpl<S>>): RpcService {
  return { service, impl };
}
