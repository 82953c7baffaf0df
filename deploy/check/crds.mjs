// Validates the custom resources of rendered manifests whose schemas come from the npm registry:
// ServiceMonitor (monitoring.coreos.com/v1), with the Prometheus Operator's models, generated
// from its CRDs. (The SpinApp is checked by check.py.)
//
//   node crds.mjs RENDERED.yaml...
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const models = { "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor };
let checked = 0;
let failed = 0;
for (const file of process.argv.slice(2)) {
  for (const document of parseAllDocuments(readFileSync(file, "utf8"))) {
    const resource = document.toJS();
    if (!resource) continue;
    const Model = models[`${resource.apiVersion}/${resource.kind}`];
    if (!Model) continue;
    checked += 1;
    try {
      new Model(resource).validate();
    } catch (error) {
      failed += 1;
      console.log(`FAIL ${file}: ${resource.kind}/${resource.metadata?.name}: ${error.message}`);
    }
  }
}
console.log(`crds: ${checked} custom resources validated, ${failed} failures`);
process.exit(failed === 0 ? 0 : 1);
