//! Wire conversions for secrets and configs (see `model::secret`).
use crate::convert::meta_to_pb;
use crate::model::{Config, FileReference, Secret, SecretSpec};
use crate::pb;

pub fn file_ref_to_pb(r: &FileReference) -> pb::FileReference {
    pb::FileReference {
        source_id: r.source_id.clone(),
        source_name: r.source_name.clone(),
        target: r.target.clone(),
        uid: r.uid.clone(),
        gid: r.gid.clone(),
        mode: r.mode,
    }
}

/// Unchecked: the control API resolves the source and fills the defaults.
pub fn file_ref_from_pb(r: pb::FileReference) -> FileReference {
    FileReference {
        source_id: r.source_id,
        source_name: r.source_name,
        target: r.target,
        uid: r.uid,
        gid: r.gid,
        mode: r.mode,
    }
}

pub fn secret_spec_from_pb(s: pb::SecretSpec) -> SecretSpec {
    SecretSpec {
        name: s.name,
        labels: s.labels.into_iter().collect(),
        data: s.data,
    }
}

/// A secret as the API shows it: never with its data.
pub fn secret_to_pb(s: &Secret) -> pb::Secret {
    pb::Secret {
        id: s.id.clone(),
        meta: Some(meta_to_pb(&s.meta)),
        spec: Some(pb::SecretSpec {
            name: s.spec.name.clone(),
            labels: s.spec.labels.clone().into_iter().collect(),
            data: Vec::new(),
        }),
    }
}

/// A config as the API shows it, with its data.
pub fn config_to_pb(c: &Config) -> pb::Secret {
    pb::Secret {
        id: c.id.clone(),
        meta: Some(meta_to_pb(&c.meta)),
        spec: Some(pb::SecretSpec {
            name: c.spec.name.clone(),
            labels: c.spec.labels.clone().into_iter().collect(),
            data: c.spec.data.clone(),
        }),
    }
}
