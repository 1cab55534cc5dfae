//! Protobuf to Envoy's JSON shape: the descriptor set compiled from Envoy's `.proto` files
//! (`build.rs`) decodes any resource or extension the control plane sends, and serializes it
//! with the proto field names the YAML config uses.
