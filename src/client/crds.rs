//! The CustomResourceDefinitions a server serves, as a client reads them: what `berth apply -f`
//! and `berth diff -f` check custom resources against when their CRD is not in the set.

use std::time::Duration;

use serde_json::Value;

use super::ClientOptions;
use crate::manifest::crd::{Catalog, Definition};

/// How long a client waits for the list before checking without it.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// The served CRDs that pass the checks; none when the server cannot be reached (the
/// command then reports that itself, once it sends).
pub async fn served_definitions(options: &ClientOptions) -> Catalog {
    let mut catalog = Catalog::default();
    let Ok(connection) = options.connect().await else {
        return catalog;
    };
    let request = http::Request::get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
        .body(Vec::new())
        .expect("a valid request");
    let listed =
        tokio::time::timeout(LIST_TIMEOUT, connection.client.request::<Value>(request)).await;
    let Ok(Ok(list)) = listed else {
        return catalog;
    };
    for item in list["items"].as_array().into_iter().flatten() {
        if let Ok(definition) = Definition::parse(item) {
            // The server refuses a second CRD of one kind; nothing to report here.
            let _ = catalog.add(definition);
        }
    }
    catalog
}
