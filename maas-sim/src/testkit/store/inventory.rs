//! Inventory behaviours: upserts, filters, paging, states.

use maas_core::host::HostState;
use maas_core::ports::inventory::HostFilter;
use maas_core::ports::store::*;

use super::*;

/// The inventory upserts idempotently, filters, pages and sets states.
pub async fn inventory_upserts_lists_and_sets_state(t: Harness) {
    let dc1 = t.add_hosts("dc1", 3).await;
    t.add_hosts("dc1", 3).await; // idempotent
    t.add_hosts("dc2", 2).await;
    let all = t.store.host_list(HostFilter::default()).await.unwrap();
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].hostname < w[1].hostname));
    let page = t
        .store
        .host_list(HostFilter { after: Some(all[1].hostname.clone()), limit: 2, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page, all[2..4].to_vec());
    t.store.host_set_state(&dc1[0], HostState::Allocated).await.unwrap();
    let allocated =
        t.store.host_list(HostFilter { state: Some(HostState::Allocated), ..Default::default() }).await.unwrap();
    assert_eq!(allocated.len(), 1);
    assert!(matches!(t.store.host_set_state(&h("ghost"), HostState::Ready).await, Err(StoreError::NotFound { .. })));
    let got = t.store.host_get_many(&[dc1[1].clone(), h("ghost")]).await.unwrap();
    assert_eq!(got.len(), 1);
}
