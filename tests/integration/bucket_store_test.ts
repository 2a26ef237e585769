import { DynamoBucketStore } from "../../core/store/dynamo_bucket_store.ts";
import { tableOf } from "../../core/store/table.ts";
import { bucketStoreContract } from "../bucket_store_contract.ts";
import { freshRepo } from "./_harness.ts";

bucketStoreContract("DynamoDB store", async () => {
  const env = await freshRepo();
  const store = new DynamoBucketStore(tableOf(env.repo));
  return {
    store,
    ns: env.repo.namespaceId,
    link: async (entityId, link) => {
      if (link.parentId) await env.repo.createEntity(link.parentId);
      await env.repo.createEntity(entityId, {
        ...(link.parentId ? { parentId: link.parentId } : {}),
        cascade: link.cascade,
      });
    },
    [Symbol.asyncDispose]: () => env[Symbol.asyncDispose](),
  };
});
