//! Inventory behaviours: upserts, filters, paging, states.

use maas_core::host::{HostState, StateChange};
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
    let at = t.now();
    let allocate = StateChange { state: HostState::Allocated, allocated_to: Some("payments".into()), at };
    t.store.host_set_state(&dc1[0], allocate).await.unwrap();
    let allocated =
        t.store.host_list(HostFilter { state: Some(HostState::Allocated), ..Default::default() }).await.unwrap();
    assert_eq!(allocated.len(), 1);
    // Who holds it and since when are kept; a later state clears the holder.
    assert_eq!((allocated[0].allocated_to.as_deref(), allocated[0].state_since), (Some("payments"), Some(at)));
    let later = at.plus(std::time::Duration::from_secs(60));
    t.store.host_set_state(&dc1[0], StateChange::to(HostState::Defunct, later)).await.unwrap();
    let h0 = t.store.host_get_many(std::slice::from_ref(&dc1[0])).await.unwrap().remove(0);
    assert_eq!((h0.state, h0.allocated_to.as_deref(), h0.state_since), (HostState::Defunct, None, Some(later)));
    // An import carries them too.
    let mut imported = h0.clone();
    StateChange { state: HostState::Allocated, allocated_to: Some("batch-jobs".into()), at }.apply(&mut imported);
    t.store.host_upsert_many(vec![imported.clone()]).await.unwrap();
    assert_eq!(t.store.host_get_many(std::slice::from_ref(&dc1[0])).await.unwrap(), vec![imported]);
    let ghost = StateChange::to(HostState::Ready, at);
    assert!(matches!(t.store.host_set_state(&h("ghost"), ghost).await, Err(StoreError::NotFound { .. })));
    let got = t.store.host_get_many(&[dc1[1].clone(), h("ghost")]).await.unwrap();
    assert_eq!(got.len(), 1);
    // A Redfish BMC's settings round-trip, and a host can go back to IPMI.
    let mut redfish = got[0].clone();
    redfish.bmc = maas_core::host::BmcEndpoint {
        system_id: Some("System.Embedded.1".into()),
        tls: maas_core::host::BmcTls::parse(&format!("sha256:{}", "0f".repeat(32))).unwrap(),
        ..maas_core::host::BmcEndpoint::redfish("10.9.0.1", 8443, "rack-7")
    };
    redfish.boot_method = maas_core::host::BootMethod::VirtualMedia;
    t.store.host_upsert_many(vec![redfish.clone()]).await.unwrap();
    assert_eq!(t.store.host_get_many(std::slice::from_ref(&dc1[1])).await.unwrap(), vec![redfish.clone()]);
    t.store.host_upsert_many(vec![got[0].clone()]).await.unwrap();
    assert_eq!(t.store.host_get_many(std::slice::from_ref(&dc1[1])).await.unwrap(), got);
}

/// Hosts carry MACs; a MAC names one host (an import that would share one is refused whole,
/// naming both hosts); the boot service finds a host by its MAC.
pub async fn macs_are_unique_and_find_their_host(t: Harness) {
    let names = t.add_hosts("dc1", 3).await;
    let mut hosts = t.store.host_get_many(&names).await.unwrap();
    hosts.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    let mac = |s: &str| maas_core::host::MacAddr::parse(s).unwrap();
    hosts[0].mac = Some(mac("52:54:00:00:00:01"));
    hosts[1].mac = Some(mac("52:54:00:00:00:02"));
    t.store.host_upsert_many(hosts[..2].to_vec()).await.unwrap();
    let found = t.store.host_list(HostFilter { mac: Some(mac("52-54-00-00-00-02")), ..Default::default() }).await;
    assert_eq!(found.unwrap(), vec![hosts[1].clone()]);
    let none = t.store.host_list(HostFilter { mac: Some(mac("52:54:00:00:00:09")), ..Default::default() }).await;
    assert!(none.unwrap().is_empty());
    // Host 2 takes host 0's MAC: refused, naming both, and nothing written.
    let mut thief = hosts[2].clone();
    thief.mac = hosts[0].mac;
    thief.state = HostState::Allocated;
    let err = t.store.host_upsert_many(vec![thief.clone()]).await.unwrap_err();
    match &err {
        StoreError::DuplicateMac { mac: m, hosts: named } => {
            assert_eq!(*m, mac("52:54:00:00:00:01"));
            assert_eq!(named, &vec![hosts[0].hostname.clone(), hosts[2].hostname.clone()]);
        }
        other => panic!("expected DuplicateMac, got {other}"),
    }
    assert!(
        err.to_string().contains(hosts[0].hostname.as_str()) && err.to_string().contains(hosts[2].hostname.as_str())
    );
    assert_eq!(t.store.host_get_many(&names[2..]).await.unwrap()[0].state, HostState::Ready, "nothing written");
    // Two new hosts of one import sharing a MAC: the same.
    let mut a = hosts[2].clone();
    a.mac = Some(mac("52:54:00:00:00:07"));
    let mut b = hosts[2].clone();
    b.hostname = h("n9.dc1");
    b.mac = a.mac;
    assert!(matches!(t.store.host_upsert_many(vec![a.clone(), b]).await, Err(StoreError::DuplicateMac { .. })));
    // Moving a MAC between hosts in one import is fine; re-importing a host with its own too.
    let mut zero = hosts[0].clone();
    zero.mac = Some(mac("52:54:00:00:00:03"));
    let mut two = hosts[2].clone();
    two.mac = hosts[0].mac;
    t.store.host_upsert_many(vec![zero.clone(), two.clone()]).await.unwrap();
    t.store.host_upsert_many(vec![zero, two]).await.unwrap();
}
