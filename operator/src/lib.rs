//! capsule-operator: reconciles CapsulePools into warm worker pods.
