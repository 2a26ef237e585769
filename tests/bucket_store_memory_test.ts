import { MemoryBucketStore } from "../core/store/memory_bucket_store.ts";
import { bucketStoreContract } from "./bucket_store_contract.ts";

bucketStoreContract("memory store", () => {
  const store = new MemoryBucketStore();
  const ns = "ns1";
  return Promise.resolve({
    store,
    ns,
    link: (entityId, link) => {
      store.setLink(ns, entityId, link);
      return Promise.resolve();
    },
    [Symbol.asyncDispose]: () => Promise.resolve(),
  });
});
