//! [`BootProvisioner`]: maas-core's `Provisioner` over the image catalog. What a host is
//! served is derived from its job chain by the boot service, so `prepare` checks that the
//! boot can be served and `clear` has nothing to undo.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use maas_core::host::{BootMethod, Host};
use maas_core::names::Hostname;
use maas_core::netboot::BootUrls;
use maas_core::plan::BootImage;
use maas_core::ports::services::{ImageSummary, PreparedBoot, ProvisionError, Provisioner};
use maas_core::validate::Problem;

use crate::catalog::{Catalog, Image};

/// The provisioner maasd wires when it runs a boot service.
#[derive(Debug, Clone)]
pub struct BootProvisioner {
    catalog: Arc<Catalog>,
    urls: Option<BootUrls>,
}

impl BootProvisioner {
    /// Over `catalog`.
    pub fn new(catalog: Arc<Catalog>) -> Self {
        BootProvisioner { catalog, urls: None }
    }

    /// Serving local ISO files for virtual media through the boot service at `public_url`
    /// (what hosts' BMCs reach).
    pub fn with_public_url(mut self, public_url: &str) -> Self {
        self.urls = Some(BootUrls { base: public_url.trim_end_matches('/').to_string() });
        self
    }
}

/// The catalog image a boot names, or why there is none.
pub(crate) fn image_for<'a>(catalog: &'a Catalog, image: &BootImage) -> Result<&'a Image, String> {
    match image {
        BootImage::Install { os } => catalog.install(os.as_str()).ok_or_else(|| {
            let known = catalog.install_names();
            if known.is_empty() {
                format!("unknown image {os}: the catalog has no install images")
            } else {
                format!("unknown image {os}; known: {}", known.join(", "))
            }
        }),
        BootImage::Wipe { .. } => {
            catalog.wipe().ok_or_else(|| "the catalog has no wipe image (an image with kind = \"wipe\")".to_string())
        }
    }
}

#[async_trait]
impl Provisioner for BootProvisioner {
    fn check(&self, image: &BootImage, hosts: &[&Host], params: &BTreeMap<String, String>) -> Vec<Problem> {
        let mut problems = Vec::new();
        let field = match image {
            BootImage::Install { .. } => "action.os",
            BootImage::Wipe { .. } => "action",
        };
        match image_for(&self.catalog, image) {
            Err(message) => problems.push(Problem::BadParameter { field: field.into(), message }),
            Ok(found) => {
                if let Some(Err(e)) = found.template.as_ref().map(|t| t.check(params)) {
                    problems.push(Problem::BadParameter {
                        field: "params".into(),
                        message: format!("{}: {e}", found.name),
                    });
                }
            }
        }
        if let Ok(found) = image_for(&self.catalog, image)
            && found.iso.is_none()
        {
            for h in hosts.iter().filter(|h| h.boot_method == BootMethod::VirtualMedia) {
                problems.push(Problem::NotBootable {
                    host: h.hostname.clone(),
                    message: format!("boots by virtual media, and image {} has no iso in the catalog", found.name),
                });
            }
        }
        for h in hosts.iter().filter(|h| h.mac.is_none()) {
            problems.push(Problem::NotBootable {
                host: h.hostname.clone(),
                message: "has no MAC address in the inventory: the boot service cannot tell its network boot apart"
                    .into(),
            });
        }
        problems
    }

    fn images(&self) -> Vec<ImageSummary> {
        self.catalog.summaries()
    }

    async fn prepare(&self, host: &Host, boot: &PreparedBoot) -> Result<(), ProvisionError> {
        let image =
            image_for(&self.catalog, &boot.image).map_err(|message| ProvisionError { message, retryable: false })?;
        let Some(mac) = host.mac else {
            return Err(ProvisionError {
                message: format!("{} has no MAC address in the inventory", host.hostname),
                retryable: false,
            });
        };
        tracing::info!(host = %host.hostname, %mac, image = %image.name, "boot service: network boot prepared");
        Ok(())
    }

    async fn clear(&self, _host: &Hostname) -> Result<(), ProvisionError> {
        Ok(())
    }

    fn media_url(&self, host: &Host, image: &BootImage) -> Result<String, ProvisionError> {
        let fail = |message: String| ProvisionError { message, retryable: false };
        let found = image_for(&self.catalog, image).map_err(fail)?;
        let local = BootUrls { base: String::new() };
        let urls = self.urls.as_ref().unwrap_or(&local);
        match found.iso_url(urls) {
            Some(url) if url.starts_with("http") => Ok(url),
            Some(_) => Err(fail(format!(
                "{}: image {} has a local iso, and no boot service URL is known to serve it from",
                host.hostname, found.name
            ))),
            None => Err(fail(format!("{}: image {} has no iso for virtual media", host.hostname, found.name))),
        }
    }
}
