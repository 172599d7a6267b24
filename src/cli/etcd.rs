//! The flags that say where etcd is and how to reach it, shared by `berth server` and
//! `berth snapshot save`, so both reach etcd with the same words and the same TLS.

use std::path::PathBuf;

use clap::Args;

use crate::cluster::store::EtcdConfig;

#[derive(Debug, Args)]
pub struct EtcdFlags {
    /// Client URLs of the etcd that holds the cluster, instead of the data dir's SQLite file;
    /// several masters on one etcd serve one cluster (needs the `etcd` build feature)
    #[arg(
        long,
        value_name = "URL,...",
        value_delimiter = ',',
        env = "BERTH_ETCD_ENDPOINTS"
    )]
    pub etcd_endpoints: Vec<String>,
    /// CA certificate (PEM) that signed the etcd members' certificates
    #[arg(long, value_name = "FILE", requires = "etcd_endpoints")]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's client certificate authentication
    #[arg(long, value_name = "FILE", requires_all = ["etcd_endpoints", "etcd_keyfile"])]
    pub etcd_certfile: Option<PathBuf>,
    /// Client key (PEM) for --etcd-certfile
    #[arg(long, value_name = "FILE", requires_all = ["etcd_endpoints", "etcd_certfile"])]
    pub etcd_keyfile: Option<PathBuf>,
}

impl EtcdFlags {
    /// The etcd these flags name, with every key under `prefix`; `None` without
    /// `--etcd-endpoints` (the store is then the data dir's SQLite file).
    pub fn config(&self, prefix: &str) -> Option<EtcdConfig> {
        (!self.etcd_endpoints.is_empty()).then(|| EtcdConfig {
            endpoints: self.etcd_endpoints.clone(),
            prefix: prefix.to_string(),
            ca_file: self.etcd_cafile.clone(),
            cert_file: self.etcd_certfile.clone(),
            key_file: self.etcd_keyfile.clone(),
        })
    }
}
