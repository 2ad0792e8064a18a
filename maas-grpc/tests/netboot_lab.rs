//! The netboot lab: real (virtual) machines reimaged, wiped and decommissioned by a real
//! `maasd`. Three QEMU VMs (TCG), each the machine behind its own `ipmi_sim` BMC (the
//! BMC's chassis control starts the VM with the boot device it was told, stops it on power
//! off and reports whether it runs); maasd drives them over IPMI and serves their network
//! boots from its boot service. The artifacts (a Debian kernel, an installer initramfs, a
//! bootable "OS image") are built by `scripts/netboot-lab.sh` into target/netboot-lab.
//!
//! Every process this test starts (maasd, the BMCs, the VMs they start) is stopped by PID
//! when the test ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use maas_grpc::pb::maas_client::MaasClient;
use maas_grpc::pb::{self, action::Kind};
use maas_ipmi::harness::{Chassis, PASSWORD, SimFleet, USER};
use tonic::transport::{Channel, Endpoint};

const MACS: [&str; 3] = ["52:54:00:1a:b0:01", "52:54:00:1a:b0:02", "52:54:00:1a:b0:03"];
const DISK_BYTES: u64 = 64 << 20;

struct Lab {
    dir: PathBuf,
    artifacts: PathBuf,
    maasd: Child,
    api_port: u16,
    boot_port: u16,
    // Dropped after the VMs are stopped (its Drop removes their directories).
    bmcs: Option<SimFleet>,
}

impl Lab {
    fn vm_dir(&self, i: usize) -> PathBuf {
        self.bmcs.as_ref().unwrap().bmcs[i].dir().to_path_buf()
    }

    fn disk(&self, i: usize) -> PathBuf {
        self.dir.join(format!("vm{}.disk", i + 1))
    }

    fn console(&self, i: usize) -> String {
        std::fs::read_to_string(self.vm_dir(i).join("console.log")).unwrap_or_default()
    }

    fn calls(&self, i: usize) -> Vec<String> {
        self.bmcs.as_ref().unwrap().bmcs[i].calls()
    }

    fn vm_running(&self, i: usize) -> bool {
        let pid = std::fs::read_to_string(self.vm_dir(i).join("qemu.pid")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        // "PID (comm) STATE ...": a zombie has exited.
        stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'))
    }

    fn maasd_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maasd.log")).unwrap_or_default()
    }

    /// What the boot service answers a VM's firmware now.
    fn boot_script(&self, i: usize) -> String {
        http(self.boot_port, "GET", &format!("/boot/{}", MACS[i]), "").1
    }

    fn explain(&self) -> String {
        let mut s = String::new();
        for i in 0..3 {
            let console = self.console(i);
            let tail: Vec<&str> = console.lines().filter(|l| l.contains("maas")).collect();
            s.push_str(&format!("\n--- vm{} calls {:?}\n    console (maas lines): {tail:?}", i + 1, self.calls(i)));
        }
        let log = self.maasd_log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        s.push_str(&format!("\n--- maasd log (last lines, newest first):\n{}", tail.join("\n")));
        s
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.maasd.kill();
        let _ = self.maasd.wait();
        if let Some(fleet) = &self.bmcs {
            for bmc in &fleet.bmcs {
                if let Ok(pid) = std::fs::read_to_string(bmc.dir().join("qemu.pid")) {
                    let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
                }
            }
        }
        self.bmcs.take();
        if std::env::var_os("MAAS_KEEP_LAB").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn sha256(path: &Path, len: Option<u64>) -> String {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut left = len.unwrap_or(u64::MAX);
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        let n = f.read(&mut buf[..(left.min(1 << 16) as usize)]).unwrap();
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        left -= n as u64;
    }
    ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// One HTTP/1.1 request to 127.0.0.1:`port`: the status and the body.
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn start_lab() -> Lab {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let artifacts = root.join("target/netboot-lab");
    let built =
        Command::new(root.join("scripts/netboot-lab.sh")).arg(&artifacts).status().expect("netboot-lab.sh runs");
    assert!(built.success(), "scripts/netboot-lab.sh failed");
    let dir = std::env::temp_dir().join(format!("maas-netboot-lab-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (api_port, boot_port) = (free_port(), free_port());
    for i in 0..3 {
        let disk = dir.join(format!("vm{}.disk", i + 1));
        std::fs::File::create(&disk).unwrap().set_len(DISK_BYTES).unwrap();
    }
    let prepare = |i: usize, bmc_dir: &Path| {
        let disk = dir.join(format!("vm{}.disk", i + 1));
        std::fs::write(
            bmc_dir.join("vm.env"),
            format!("MAC={}\nDISK={}\nBOOT_PORT={boot_port}\n", MACS[i], disk.display()),
        )
    };
    let listen: Vec<(String, u16)> = (0..3)
        .map(|_| {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            ("127.0.0.1".to_string(), s.local_addr().unwrap().port())
        })
        .collect();
    let program = artifacts.join("vm-chassis.sh");
    let bmcs = SimFleet::start_with(&listen, Some(Chassis { program: &program, prepare: &prepare })).unwrap();

    // The image catalog: the OS image written by the installer, and the wipe ramdisk (the
    // same initramfs, told by maas.wipe what to do).
    let template = dir.join("lab.config");
    std::fs::write(
        &template,
        "LAB_MODE={{ params.lab_mode }}\nFIRST_BOOT_URL={{ first_boot_url }}\nHOST={{ hostname }}\n",
    )
    .unwrap();
    let (kernel, initrd, os) = (artifacts.join("vmlinuz"), artifacts.join("installer.img"), artifacts.join("os.img"));
    let config = format!(
        r#"
listen = "127.0.0.1:{api_port}"
db = "sqlite://{db}"
plaintext = true
plaintext_principal = "lab"
policy = "{policy}"
instance = "lab"
[metrics]
listen = "off"
[workers]
pools = ["lab/vm"]
per_pool = 4
[ipmi]
deadline_secs = 20
[boot]
listen = "127.0.0.1:{boot_port}"
public_url = "http://10.0.2.2:{boot_port}"
retry_secs = 3
[[boot.images]]
name = "lab-os"
kernel = "{kernel}"
kernel_sha256 = "{ksha}"
initrd = "{initrd}"
initrd_sha256 = "{isha}"
root = "{os}"
root_sha256 = "{osha}"
kernel_args = "console=ttyS0 quiet"
config_template = "{template}"
[[boot.images]]
name = "lab-wipe"
kind = "wipe"
kernel = "{kernel}"
kernel_sha256 = "{ksha}"
initrd = "{initrd}"
initrd_sha256 = "{isha}"
kernel_args = "console=ttyS0 quiet"
"#,
        db = dir.join("maasd.db").display(),
        policy = dir.join("policy.json").display(),
        kernel = kernel.display(),
        ksha = sha256(&kernel, None),
        initrd = initrd.display(),
        isha = sha256(&initrd, None),
        os = os.display(),
        osha = sha256(&os, None),
        template = template.display(),
    );
    std::fs::write(dir.join("maasd.toml"), config).unwrap();
    std::fs::write(
        dir.join("policy.json"),
        r#"{"members": {"lab": ["ops"]}, "grants": [{"group": "ops", "admin": true}]}"#,
    )
    .unwrap();
    let maasd = Command::new(env!("CARGO_BIN_EXE_maasd"))
        .arg("--config")
        .arg(dir.join("maasd.toml"))
        .env("MAAS_BMC_LAB_USER", USER)
        .env("MAAS_BMC_LAB_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("maasd.log")).unwrap())
        .spawn()
        .expect("maasd runs");
    let lab = Lab { dir, artifacts, maasd, api_port, boot_port, bmcs: Some(bmcs) };
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", api_port)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", boot_port)).is_err()
    {
        assert!(started.elapsed() < Duration::from_secs(20), "maasd did not listen: {}", lab.maasd_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    lab
}

async fn client(lab: &Lab) -> MaasClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{}", lab.api_port)).unwrap().connect().await.unwrap();
    MaasClient::new(channel)
}

fn host(lab: &Lab, i: usize, mac: &str) -> pb::Host {
    let bmc = &lab.bmcs.as_ref().unwrap().bmcs[i];
    pb::Host {
        hostname: format!("vm{}.lab", i + 1),
        site: "lab".into(),
        pool: "vm".into(),
        sku: "qemu-tcg".into(),
        bmc_address: bmc.address.clone(),
        bmc_port: u32::from(bmc.port),
        credentials_ref: "lab".into(),
        mac: mac.into(),
        ..Default::default()
    }
}

fn submit(kind: Kind, hosts: &str, params: &[(&str, &str)]) -> pb::SubmitBatchRequest {
    pb::SubmitBatchRequest {
        action: Some(pb::Action { kind: Some(kind) }),
        hosts: vec![hosts.into()],
        failure_budget: Some(3),
        params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

fn reimage(timeout_secs: Option<u64>) -> Kind {
    Kind::Reimage(pb::action::Reimage { os: "lab-os".into(), install_timeout_secs: timeout_secs })
}

/// Polls the batch until it is terminal (at most `limit`).
async fn finish(c: &mut MaasClient<Channel>, lab: &Lab, id: &str, limit: Duration) -> pb::Batch {
    let started = Instant::now();
    loop {
        let b = c
            .get_batch(pb::GetBatchRequest { batch_id: id.into(), hostnames: vec![], steps: false })
            .await
            .unwrap()
            .into_inner();
        if matches!(b.state.as_str(), "completed" | "cancelled") {
            return b;
        }
        assert!(started.elapsed() < limit, "batch {id} not done after {limit:?}: {b:?}{}", lab.explain());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn host_state<'a>(b: &'a pb::Batch, name: &str) -> &'a pb::HostRun {
    b.hosts.iter().find(|h| h.hostname == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_machines_are_reimaged_wiped_and_decommissioned_through_their_bmcs_and_the_boot_service() {
    let lab = start_lab();
    let mut c = client(&lab).await;

    // The inventory: a MAC names one host, refused naming both.
    let clash = pb::ImportHostsRequest { hosts: vec![host(&lab, 0, MACS[0]), host(&lab, 1, MACS[0])] };
    let e = c.import_hosts(clash).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("vm1.lab and vm2.lab"), "{}", e.message());
    let hosts = (0..3).map(|i| host(&lab, i, MACS[i])).collect();
    c.import_hosts(pb::ImportHostsRequest { hosts }).await.unwrap();
    let images = c.list_images(pb::ListImagesRequest {}).await.unwrap().into_inner().images;
    assert_eq!(
        images.iter().map(|i| (i.name.as_str(), i.kind.as_str())).collect::<Vec<_>>(),
        [("lab-os", "install"), ("lab-wipe", "wipe")]
    );
    assert_eq!(images[0].template_params, ["lab_mode"]);

    // Refused at submit, naming why: an unknown image, a missing template parameter.
    let unknown =
        submit(Kind::Reimage(pb::action::Reimage { os: "rhel-9".into(), install_timeout_secs: None }), "vm1.lab", &[]);
    let e = c.submit_batch(unknown).await.unwrap_err();
    assert!(e.message().contains("unknown image rhel-9; known: lab-os"), "{}", e.message());
    let e = c.submit_batch(submit(reimage(None), "vm1.lab", &[])).await.unwrap_err();
    assert!(e.message().contains("params.lab_mode"), "{}", e.message());

    // Phase 1: two VMs reimaged in one batch, while the third's installer fails.
    let started = Instant::now();
    let good = c.submit_batch(submit(reimage(Some(300)), "vm[1-2].lab", &[("lab_mode", "normal")])).await.unwrap();
    let bad = c.submit_batch(submit(reimage(Some(300)), "vm3.lab", &[("lab_mode", "fail")])).await.unwrap();
    let (good, bad) = (good.into_inner().batch_id, bad.into_inner().batch_id);
    let b = finish(&mut c, &lab, &good, Duration::from_secs(420)).await;
    let reimage_two = started.elapsed();
    assert_eq!((b.state.as_str(), b.counts.unwrap().succeeded), ("completed", 2), "{b:?}{}", lab.explain());
    let os_len = std::fs::metadata(lab.artifacts.join("os.img")).unwrap().len();
    let want = sha256(&lab.artifacts.join("os.img"), None);
    for i in 0..2 {
        assert_eq!(sha256(&lab.disk(i), Some(os_len)), want, "vm{} holds exactly the image{}", i + 1, lab.explain());
        let console = lab.console(i);
        assert!(console.contains("maas lab OS: first boot from disk"), "vm{} booted its disk{}", i + 1, lab.explain());
        let calls = lab.calls(i);
        let boots: Vec<&String> = calls.iter().filter(|c| c.starts_with("start boot=")).collect();
        assert!(boots.first().is_some_and(|b| *b == "start boot=n"), "netbooted first: {calls:?}");
        assert!(boots.last().is_some_and(|b| *b == "start boot=c"), "then its disk: {calls:?}");
        assert!(lab.boot_script(i).contains("boot from local disk"), "nothing offered afterwards");
    }
    let b = finish(&mut c, &lab, &bad, Duration::from_secs(240)).await;
    let vm3 = host_state(&b, "vm3.lab");
    assert_eq!(vm3.state, "failed", "{b:?}");
    assert!(
        vm3.last_error.contains("lab installer told to fail") && vm3.last_error.contains("simulated failure"),
        "{vm3:?}"
    );
    assert!(
        lab.boot_script(2).contains("boot from local disk"),
        "a failed install is not offered again: {}",
        lab.boot_script(2)
    );
    let tickets = c.list_tickets(pb::ListTicketsRequest { limit: 20 }).await.unwrap().into_inner().tickets;
    assert!(
        tickets.iter().any(|t| t.kind == "install_failed" && t.host == "vm3.lab" && t.summary.contains("told to fail")),
        "{tickets:?}"
    );
    // A forged or reused token is refused and changes nothing.
    let (status, body) =
        http(lab.boot_port, "POST", &format!("/callback/{}", "0".repeat(32)), r#"{"succeeded": true}"#);
    assert_eq!(status, 404, "{body}");

    // Phase 2, at once: an installer that never calls back, a wipe, a decommission.
    let silent = c.submit_batch(submit(reimage(Some(30)), "vm1.lab", &[("lab_mode", "silent")])).await.unwrap();
    let wipe = c.submit_batch(submit(Kind::WipeDisks(pb::action::Wipe { method: 0 }), "vm3.lab", &[])).await.unwrap();
    let decom =
        c.submit_batch(submit(Kind::Decommission(pb::action::Wipe { method: 0 }), "vm2.lab", &[])).await.unwrap();
    let (silent, wipe, decom) = (silent.into_inner().batch_id, wipe.into_inner().batch_id, decom.into_inner().batch_id);

    let b = finish(&mut c, &lab, &wipe, Duration::from_secs(300)).await;
    assert_eq!(host_state(&b, "vm3.lab").state, "succeeded", "{b:?}{}", lab.explain());
    assert_eq!(sha256(&lab.disk(2), None), sha256_zeros(DISK_BYTES), "vm3's disk is zeroed");
    assert!(!lab.vm_running(2), "a wiped host is powered off");
    assert!(lab.boot_script(2).contains("local disk"), "a finished wipe is not offered again");

    let b = finish(&mut c, &lab, &decom, Duration::from_secs(300)).await;
    assert_eq!(host_state(&b, "vm2.lab").state, "succeeded", "{b:?}{}", lab.explain());
    assert_eq!(sha256(&lab.disk(1), None), sha256_zeros(DISK_BYTES), "vm2's disk is zeroed");
    assert!(!lab.vm_running(1), "a decommissioned host is powered off");
    assert!(lab.boot_script(1).contains("decommissioned: nothing is served to it"), "{}", lab.boot_script(1));
    let listed = c
        .list_hosts(pb::ListHostsRequest { mac: MACS[1].into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert_eq!(listed[0].state, "decommissioned");
    let e = c.submit_batch(submit(Kind::PowerOn(pb::action::PowerOn {}), "vm2.lab", &[])).await.unwrap_err();
    assert!(e.message().contains("decommissioned"), "{}", e.message());

    let b = finish(&mut c, &lab, &silent, Duration::from_secs(300)).await;
    let vm1 = host_state(&b, "vm1.lab");
    assert_eq!(vm1.state, "failed", "{b:?}");
    assert!(vm1.last_error.contains("no await_install report before the deadline"), "{vm1:?}");
    assert!(lab.boot_script(0).contains("local disk"), "a timed-out install is not offered again");

    // Phase 3: cancelled while its installer runs: fenced (powered off, verified) first.
    let installing = |lab: &Lab| lab.console(0).matches("never calling back").count();
    let before = installing(&lab);
    let again = c.submit_batch(submit(reimage(Some(300)), "vm1.lab", &[("lab_mode", "silent")])).await.unwrap();
    let again = again.into_inner().batch_id;
    let started = Instant::now();
    while installing(&lab) == before {
        assert!(started.elapsed() < Duration::from_secs(180), "the installer never started{}", lab.explain());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(lab.vm_running(0));
    let cancelled = c
        .cancel_batch(pb::CancelBatchRequest { batch_id: again.clone(), reason: "change window over".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state, "cancelling", "the claim is held until the host is fenced");
    let b = finish(&mut c, &lab, &again, Duration::from_secs(120)).await;
    assert_eq!((b.state.as_str(), host_state(&b, "vm1.lab").state.as_str()), ("cancelled", "cancelled"), "{b:?}");
    assert!(!lab.vm_running(0), "powered off before its claim was released{}", lab.explain());
    let calls = lab.calls(0);
    let last_start = calls.iter().rposition(|c| c.starts_with("start boot=n")).unwrap();
    assert!(calls[last_start..].iter().any(|c| c == "set power 0"), "{calls:?}");
    assert!(lab.boot_script(0).contains("local disk"));
    eprintln!(
        "netboot lab: two VMs reimaged in one batch in {:.0} s; whole lab {:.0} s",
        reimage_two.as_secs_f64(),
        lab_elapsed(&lab)
    );
}

fn lab_elapsed(lab: &Lab) -> f64 {
    std::fs::metadata(&lab.dir)
        .and_then(|m| m.created())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

fn sha256_zeros(len: u64) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let zeros = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        ctx.update(&zeros[..n]);
        left -= n as u64;
    }
    ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The engine's parallelism on real machines: three VMs reimaged in one batch against one
/// at a time (`max_in_flight = 1`). A measurement, not a check (TCG on a shared 2-core
/// machine); run with `cargo test -p maas-grpc --test netboot_lab -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: several minutes of VMs"]
async fn bench_reimage_three_vms_in_one_batch_versus_one_at_a_time() {
    let lab = start_lab();
    let mut c = client(&lab).await;
    let hosts = (0..3).map(|i| host(&lab, i, MACS[i])).collect();
    c.import_hosts(pb::ImportHostsRequest { hosts }).await.unwrap();
    let mut timings = Vec::new();
    for (label, max_in_flight) in [("one batch, 3 at once", 3), ("one at a time", 1)] {
        let mut req = submit(reimage(Some(600)), "vm[1-3].lab", &[("lab_mode", "normal")]);
        req.max_in_flight = max_in_flight;
        let started = Instant::now();
        let id = c.submit_batch(req).await.unwrap().into_inner().batch_id;
        let b = finish(&mut c, &lab, &id, Duration::from_secs(900)).await;
        assert_eq!(b.counts.unwrap().succeeded, 3, "{b:?}{}", lab.explain());
        timings.push((label, started.elapsed().as_secs_f64()));
    }
    for (label, secs) in &timings {
        eprintln!("reimage 3 lab VMs, {label}: {secs:.1} s");
    }
    eprintln!("parallel / serial wall time: {:.2}", timings[0].1 / timings[1].1);
}
