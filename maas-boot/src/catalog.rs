//! The image catalog: the OS images (and the wipe image) the boot service serves, checked
//! when it is loaded — a missing file, a checksum mismatch, a bad template or two images of
//! one name is a startup error naming the image and the artifact.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use maas_core::netboot::{BootUrls, Firmware, ImageBoot, Template};
use maas_core::ports::ImageSummary;

/// What an image is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ImageKind {
    /// An OS installer: `reimage:NAME` boots it.
    #[default]
    Install,
    /// The disk-wipe ramdisk: wipes and decommissions boot it.
    Wipe,
}

/// One `[[boot.images]]` entry of maasd's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// The name reimages use (`ubuntu-24.04`).
    pub name: String,
    /// `install` (default) or `wipe`.
    #[serde(default)]
    pub kind: ImageKind,
    /// The kernel: a local path (served by the boot service) or an `http(s)://` URL.
    pub kernel: String,
    /// Its sha256, hex.
    pub kernel_sha256: String,
    /// The initrd (the installer or wipe ramdisk).
    pub initrd: String,
    /// Its sha256.
    pub initrd_sha256: String,
    /// The root image the installer writes to disk (install images).
    #[serde(default)]
    pub root: Option<String>,
    /// Its sha256 (given to the installer, which checks what it wrote).
    #[serde(default)]
    pub root_sha256: Option<String>,
    /// An ISO of the same installer for hosts that boot by virtual media (Redfish): a
    /// local path (served by the boot service) or an `http(s)://` URL the BMC fetches. The
    /// ISO's installer asks the boot service what to do by its MAC, as a network boot does.
    #[serde(default)]
    pub iso: Option<String>,
    /// Its sha256.
    #[serde(default)]
    pub iso_sha256: Option<String>,
    /// Extra kernel arguments (`console=ttyS0`).
    #[serde(default)]
    pub kernel_args: String,
    /// `legacy` (default) or `uefi`.
    #[serde(default)]
    pub firmware: Firmware,
    /// A configuration template file (cloud-init user-data, a kickstart), rendered per host.
    #[serde(default)]
    pub config_template: Option<PathBuf>,
}

/// Why the catalog cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// An artifact file is missing or unreadable.
    #[error("image {image}: {artifact} {path}: {source}")]
    Unreadable {
        /// The image.
        image: String,
        /// kernel, initrd, root or config_template.
        artifact: &'static str,
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file's sha256 is not the configured one.
    #[error("image {image}: {artifact} {path} has sha256 {actual}, the catalog says {expected}")]
    Checksum {
        /// The image.
        image: String,
        /// Which artifact.
        artifact: &'static str,
        /// The path.
        path: String,
        /// Configured.
        expected: String,
        /// Read.
        actual: String,
    },
    /// Anything else wrong with an entry.
    #[error("image {image}: {message}")]
    Invalid {
        /// The image.
        image: String,
        /// What.
        message: String,
    },
}

/// Where an artifact comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local file the boot service streams.
    File(PathBuf),
    /// A URL hosts fetch directly (checked by the installer against the sha256).
    Url(String),
}

/// A checked artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Where it is.
    pub source: Source,
    /// Its sha256 (hex, lower case).
    pub sha256: String,
}

/// A checked image.
#[derive(Debug, Clone)]
pub struct Image {
    /// Its name.
    pub name: String,
    /// Install or wipe.
    pub kind: ImageKind,
    /// The kernel.
    pub kernel: Artifact,
    /// The initrd.
    pub initrd: Artifact,
    /// The root image.
    pub root: Option<Artifact>,
    /// The ISO virtual-media hosts boot.
    pub iso: Option<Artifact>,
    /// Extra kernel arguments.
    pub kernel_args: String,
    /// How machines boot it.
    pub firmware: Firmware,
    /// The per-host configuration template.
    pub template: Option<Template>,
}

impl Image {
    /// The artifact named `kernel`, `initrd` or `root`.
    pub fn artifact(&self, name: &str) -> Option<&Artifact> {
        match name {
            "kernel" => Some(&self.kernel),
            "initrd" => Some(&self.initrd),
            "root" => self.root.as_ref(),
            "iso" => self.iso.as_ref(),
            _ => None,
        }
    }

    /// Where a BMC fetches the image's ISO (virtual media), if it has one.
    pub fn iso_url(&self, urls: &BootUrls) -> Option<String> {
        self.iso.as_ref().map(|a| match &a.source {
            Source::File(_) => urls.artifact(&self.name, "iso"),
            Source::Url(u) => u.clone(),
        })
    }

    /// The image as an iPXE script names it: files through the boot service, URLs as they are.
    pub fn boot(&self, urls: &BootUrls) -> ImageBoot {
        let url = |name: &str, a: &Artifact| match &a.source {
            Source::File(_) => urls.artifact(&self.name, name),
            Source::Url(u) => u.clone(),
        };
        ImageBoot {
            name: self.name.clone(),
            kernel: url("kernel", &self.kernel),
            initrd: url("initrd", &self.initrd),
            root: self.root.as_ref().map(|r| (url("root", r), r.sha256.clone())),
            kernel_args: self.kernel_args.clone(),
            firmware: self.firmware,
        }
    }
}

/// The checked catalog.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    images: BTreeMap<String, Image>,
}

impl Catalog {
    /// Checks every entry: names unique and well formed, every local file present with its
    /// sha256, URLs `http(s)://`, templates parsed. At most one wipe image.
    pub fn load(entries: &[ImageConfig]) -> Result<Catalog, CatalogError> {
        let mut images = BTreeMap::new();
        for e in entries {
            let invalid = |message: String| CatalogError::Invalid { image: e.name.clone(), message };
            maas_core::names::OsRelease::new(&e.name).map_err(|err| invalid(format!("name: {err}")))?;
            if images.contains_key(&e.name) {
                return Err(invalid("listed twice".into()));
            }
            if e.kind == ImageKind::Wipe && images.values().any(|i: &Image| i.kind == ImageKind::Wipe) {
                return Err(invalid("a second wipe image (the catalog has one)".into()));
            }
            if e.root.is_some() != e.root_sha256.is_some() {
                return Err(invalid("root and root_sha256 go together".into()));
            }
            if e.kernel_args.chars().any(|c| c.is_control()) {
                return Err(invalid("kernel_args has a control character".into()));
            }
            let template = match &e.config_template {
                None => None,
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Unreadable {
                        image: e.name.clone(),
                        artifact: "config_template",
                        path: path.display().to_string(),
                        source,
                    })?;
                    Some(Template::parse(&text).map_err(|err| invalid(format!("{}: {err}", path.display())))?)
                }
            };
            let root = match (&e.root, &e.root_sha256) {
                (Some(r), Some(sha)) => Some(artifact(&e.name, "root", r, sha)?),
                _ => None,
            };
            let iso = match (&e.iso, &e.iso_sha256) {
                (Some(r), Some(sha)) => Some(artifact(&e.name, "iso", r, sha)?),
                (Some(_), None) => return Err(invalid("iso needs iso_sha256".into())),
                _ => None,
            };
            let image = Image {
                iso,
                name: e.name.clone(),
                kind: e.kind,
                kernel: artifact(&e.name, "kernel", &e.kernel, &e.kernel_sha256)?,
                initrd: artifact(&e.name, "initrd", &e.initrd, &e.initrd_sha256)?,
                root,
                kernel_args: e.kernel_args.clone(),
                firmware: e.firmware,
                template,
            };
            images.insert(e.name.clone(), image);
        }
        Ok(Catalog { images })
    }

    /// The image of this name.
    pub fn get(&self, name: &str) -> Option<&Image> {
        self.images.get(name)
    }

    /// The install image of this name.
    pub fn install(&self, name: &str) -> Option<&Image> {
        self.images.get(name).filter(|i| i.kind == ImageKind::Install)
    }

    /// The wipe image.
    pub fn wipe(&self) -> Option<&Image> {
        self.images.values().find(|i| i.kind == ImageKind::Wipe)
    }

    /// The names of the install images, sorted.
    pub fn install_names(&self) -> Vec<&str> {
        self.images.values().filter(|i| i.kind == ImageKind::Install).map(|i| i.name.as_str()).collect()
    }

    /// Every image as the API lists it.
    pub fn summaries(&self) -> Vec<ImageSummary> {
        self.images
            .values()
            .map(|i| ImageSummary {
                name: i.name.clone(),
                kind: match i.kind {
                    ImageKind::Install => "install".into(),
                    ImageKind::Wipe => "wipe".into(),
                },
                firmware: match i.firmware {
                    Firmware::Uefi => "uefi".into(),
                    Firmware::Legacy => "legacy".into(),
                },
                has_config_template: i.template.is_some(),
                template_params: i
                    .template
                    .as_ref()
                    .map(|t| t.params().map(str::to_string).collect())
                    .unwrap_or_default(),
            })
            .collect()
    }
}

fn artifact(image: &str, what: &'static str, location: &str, sha256: &str) -> Result<Artifact, CatalogError> {
    let expected = sha256.trim().to_ascii_lowercase();
    if expected.len() != 64 || !expected.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CatalogError::Invalid {
            image: image.into(),
            message: format!("{what}_sha256 {sha256:?} is not 64 hexadecimal digits"),
        });
    }
    if location.starts_with("http://") || location.starts_with("https://") {
        if location.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(CatalogError::Invalid { image: image.into(), message: format!("{what} URL has whitespace") });
        }
        return Ok(Artifact { source: Source::Url(location.into()), sha256: expected });
    }
    let path = Path::new(location);
    let actual = sha256_file(path).map_err(|source| CatalogError::Unreadable {
        image: image.into(),
        artifact: what,
        path: location.into(),
        source,
    })?;
    if actual != expected {
        return Err(CatalogError::Checksum {
            image: image.into(),
            artifact: what,
            path: location.into(),
            expected,
            actual,
        });
    }
    Ok(Artifact { source: Source::File(path.to_path_buf()), sha256: expected })
}

/// The sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect())
}
