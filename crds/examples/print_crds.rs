//! Prints the CRDs as YAML; `make crds` writes this to crds/capsule.dev_crds.yaml.
fn main() {
    print!("{}", capsule_crds::crds_yaml());
}
