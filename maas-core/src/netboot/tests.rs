//! What a network-booting host is offered at each point of its chain, the scripts that say
//! it, templates and reports.

use std::collections::BTreeMap;

use super::*;
use crate::action::{Action, WipeMethod};
use crate::machine::JobOutcome;
use crate::names::OsRelease;
use crate::time::Timestamp;

const NOW: Timestamp = Timestamp::from_millis(1_000_000);

fn chain(action: Action) -> Vec<JobRecord> {
    crate::machine::tests::one_host_batch(action, NOW).jobs
}

fn reimage() -> Vec<JobRecord> {
    chain(Action::Reimage { os: OsRelease::new("ubuntu-24.04").unwrap(), install_timeout_secs: None })
}

fn set(chain: &mut [JobRecord], kind: StepKind, state: JobState) {
    chain.iter_mut().find(|j| j.kind == kind).unwrap().state = state;
}

fn offered(chain: &[JobRecord]) -> bool {
    matches!(decide_boot(Some(chain)), BootOffer::Image(_))
}

#[test]
fn the_image_is_offered_from_set_boot_pxe_until_the_waiting_step_ends_however_it_ends() {
    use JobState::*;
    let mut c = reimage();
    assert!(!offered(&c), "nothing before set_boot_pxe succeeded");
    assert!(matches!(decide_boot(None), BootOffer::LocalDisk { .. }));
    // Whatever its chain says, a decommissioned host is offered nothing.
    let mut pending = c.clone();
    set(&mut pending, StepKind::SetBootPxe, Succeeded);
    assert!(matches!(decide_host_boot(crate::host::HostState::Ready, Some(&pending)), BootOffer::Image(_)));
    let BootOffer::LocalDisk { reason } = decide_host_boot(crate::host::HostState::Decommissioned, Some(&pending))
    else {
        panic!("a decommissioned host was offered an image")
    };
    assert!(reason.contains("decommissioned"));
    set(&mut c, StepKind::Preflight, Succeeded);
    set(&mut c, StepKind::SetBootPxe, Succeeded);
    // The power cycle may still be reporting when the machine asks: it is offered already.
    set(&mut c, StepKind::PowerCycle, Running);
    assert!(offered(&c));
    set(&mut c, StepKind::PowerCycle, Succeeded);
    set(&mut c, StepKind::AwaitInstall, Waiting);
    let BootOffer::Image(p) = decide_boot(Some(&c)) else { panic!("not offered while waiting") };
    let wait = c.iter().find(|j| j.kind == StepKind::AwaitInstall).unwrap();
    let first = c.iter().find(|j| j.kind == StepKind::AwaitFirstBoot).unwrap();
    assert_eq!(p.token, wait.wait_token.clone().unwrap());
    assert_eq!(p.first_boot_token, first.wait_token.clone());
    assert_ne!(p.token, p.first_boot_token.clone().unwrap());
    assert_eq!(p.image, BootImage::Install { os: OsRelease::new("ubuntu-24.04").unwrap() });
    for end in [Succeeded, Failed, Cancelled] {
        let mut ended = c.clone();
        set(&mut ended, StepKind::AwaitInstall, end);
        let BootOffer::LocalDisk { reason } = decide_boot(Some(&ended)) else { panic!("{end}: still offered") };
        assert!(reason.contains("await_install"), "{reason}");
    }
}

#[test]
fn a_wipe_is_offered_with_its_method_and_no_first_boot() {
    let mut c = chain(Action::WipeDisks { method: WipeMethod::Secure });
    set(&mut c, StepKind::SetBootPxe, JobState::Succeeded);
    set(&mut c, StepKind::AwaitWipe, JobState::Waiting);
    let BootOffer::Image(p) = decide_boot(Some(&c)) else { panic!() };
    assert_eq!(p.first_boot_token, None);
    let image = ImageBoot {
        name: "wipe".into(),
        kernel: "http://b/images/wipe/kernel".into(),
        initrd: "http://b/images/wipe/initrd".into(),
        root: None,
        kernel_args: "console=ttyS0".into(),
        firmware: Firmware::Legacy,
    };
    let urls = BootUrls { base: "http://b".into() };
    let script = ipxe_install_script(&image, &p, &urls, "h1.dc1");
    assert!(script.starts_with("#!ipxe\n"));
    assert!(script.contains("maas.wipe=secure"), "{script}");
    assert!(script.contains(&format!("maas.callback=http://b/callback/{}", p.token)), "{script}");
    assert!(!script.contains("maas.first_boot"), "{script}");
    assert!(script.contains("initrd http://b/images/wipe/initrd\nboot\n"), "{script}");
}

#[test]
fn scripts_for_uefi_name_the_initrd_and_others_fall_back_safely() {
    let mut c = reimage();
    set(&mut c, StepKind::SetBootPxe, JobState::Succeeded);
    let BootOffer::Image(p) = decide_boot(Some(&c)) else { panic!() };
    let image = ImageBoot {
        name: "ubuntu-24.04".into(),
        kernel: "http://b/k".into(),
        initrd: "http://b/i".into(),
        root: Some(("http://b/r".into(), "ab".repeat(32))),
        kernel_args: String::new(),
        firmware: Firmware::Uefi,
    };
    let s = ipxe_install_script(&image, &p, &BootUrls { base: "http://b".into() }, "h1");
    assert!(s.contains("initrd=initrd") && s.contains("initrd --name initrd http://b/i"), "{s}");
    assert!(s.contains(&format!("maas.image_sha256={}", "ab".repeat(32))), "{s}");
    let local = ipxe_local_disk_script("unknown MAC 52:54:00:00:00:01\n#!evil");
    assert!(local.starts_with("#!ipxe\n# maas: boot from local disk: unknown MAC"), "{local}");
    assert_eq!(local.lines().count(), 3, "a reason cannot inject script lines: {local}");
    let retry = ipxe_retry_script("store unreachable", 10, &BootUrls { base: "http://b".into() });
    assert!(retry.contains("sleep 10\nchain --replace --autofree http://b/boot/${mac}"), "{retry}");
}

#[test]
fn tokens_are_checked_in_full_and_only_while_their_step_is_open() {
    assert!(tokens_equal(b"abc", b"abc"));
    assert!(!tokens_equal(b"abc", b"abd"));
    assert!(!tokens_equal(b"abc", b"ab"));
    let mut c = reimage();
    set(&mut c, StepKind::AwaitInstall, JobState::Waiting);
    let token = c.iter().find(|j| j.kind == StepKind::AwaitInstall).unwrap().wait_token.clone().unwrap();
    assert!(open_wait_for_token(&c, &token).is_some());
    assert!(open_wait_for_token(&c, &token[1..]).is_none());
    assert!(open_wait_for_token(&c, "").is_none());
    set(&mut c, StepKind::AwaitInstall, JobState::Succeeded);
    assert!(open_wait_for_token(&c, &token).is_none(), "a used token is dead");
}

#[test]
fn templates_name_unknown_variables_and_missing_params() {
    let t = Template::parse(
        "#cloud-config\nhostname: {{ hostname }}\nphone_home: {{first_boot_url}}\nkey: {{ params.ssh_key }}\n",
    )
    .unwrap();
    assert_eq!(t.params().collect::<Vec<_>>(), ["ssh_key"]);
    let vars =
        TemplateVars { hostname: "h1.dc1".into(), first_boot_url: "http://b/callback/t".into(), ..Default::default() };
    let err = t.render(&vars, &BTreeMap::new()).unwrap_err();
    assert_eq!(err, TemplateError::MissingParam("ssh_key".into()));
    let params = BTreeMap::from([("ssh_key".to_string(), "ssh-ed25519 AAA".to_string())]);
    assert_eq!(
        t.render(&vars, &params).unwrap(),
        "#cloud-config\nhostname: h1.dc1\nphone_home: http://b/callback/t\nkey: ssh-ed25519 AAA\n"
    );
    let e = Template::parse("x {{ hostnme }}").unwrap_err().to_string();
    assert!(e.contains("unknown variable \"hostnme\"") && e.contains("hostname") && e.contains("byte 2"), "{e}");
    assert!(Template::parse("x {{ hostname").unwrap_err().to_string().contains("without a closing"));
    assert!(Template::parse("{{ params.a b }}").is_err());
    assert_eq!(Template::parse("plain").unwrap().to_string(), "plain");
}

#[test]
fn an_installer_report_keeps_the_end_of_its_log_and_fails_for_good() {
    let ok: InstallReport = serde_json::from_str(r#"{"succeeded": true}"#).unwrap();
    assert_eq!(ok.outcome(), JobOutcome::Succeeded);
    let log = format!("{}tail-of-log", "x".repeat(5000));
    let bad = InstallReport { succeeded: false, error: Some("disk full".into()), log: Some(log), wiped: None };
    let JobOutcome::Failed { error, retryable } = bad.outcome() else { panic!() };
    assert!(!retryable);
    assert!(error.starts_with("disk full; log: ") && error.ends_with("tail-of-log"), "{error}");
    assert!(error.len() < LOG_EXCERPT_BYTES + 40);
    let (why, excerpt) = split_log_excerpt(&error);
    assert_eq!(why, "disk full");
    assert!(excerpt.is_some_and(|l| l.ends_with("tail-of-log") && l.len() <= LOG_EXCERPT_BYTES));
    assert_eq!(split_log_excerpt("BMC unreachable"), ("BMC unreachable", None));
    assert!(serde_json::from_str::<InstallReport>(r#"{"succeeded": true, "extra": 1}"#).is_err());
}

#[test]
fn media_is_ejected_after_runs_that_end_early_unless_the_host_runs_again() {
    use crate::host::{BmcEndpoint, BmcProtocol, BootMethod, Host};
    use crate::model::{Event, EventKind};
    use crate::names::{Hostname, Pool, Site, Sku};
    let h = |n: &str| Hostname::new(n).unwrap();
    let event =
        |kind| Event { seq: 1, batch_id: BatchId(uuid::Uuid::from_u128(1)), at: Timestamp::from_millis(0), kind };
    let events = [
        event(EventKind::HostSucceeded { host: h("a.dc1") }),
        event(EventKind::HostFailed {
            host: h("c.dc1"),
            step: StepKind::AwaitInstall,
            error: "x".into(),
            wedged: false,
        }),
        event(EventKind::HostCancelled { host: h("b.dc1") }),
        event(EventKind::HostCancelled { host: h("c.dc1") }),
    ];
    assert_eq!(runs_ended_early(&events), [h("b.dc1"), h("c.dc1")], "sorted, each once, successes left out");
    let host = |n: &str, boot_method| Host {
        hostname: h(n),
        site: Site::new("dc1").unwrap(),
        rack: None,
        pool: Pool::new("web").unwrap(),
        owner_group: None,
        sku: Sku::new("s").unwrap(),
        bmc: BmcEndpoint { protocol: BmcProtocol::Redfish, ..BmcEndpoint::ipmi("10.0.0.1", 443, "c") },
        state: HostState::Ready,
        mac: None,
        allocated_to: None,
        state_since: None,
        boot_method,
    };
    let hosts = [
        host("b.dc1", BootMethod::VirtualMedia),
        host("c.dc1", BootMethod::VirtualMedia),
        host("d.dc1", BootMethod::Network),
    ];
    let claimed = [h("c.dc1")].into_iter().collect();
    let media = boot_by_media(&hosts);
    let media_names: Vec<&str> = media.iter().map(|x| x.hostname.as_str()).collect();
    assert_eq!(media_names, ["b.dc1", "c.dc1"], "d boots from the network");
    let eject: Vec<&str> = media_to_eject(&media, &claimed).iter().map(|x| x.hostname.as_str()).collect();
    assert_eq!(eject, ["b.dc1"], "c runs again and owns its drive; d boots from the network");
}
