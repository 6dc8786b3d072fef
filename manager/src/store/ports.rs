//! The store's guard for published ports: a port published through the routing mesh
//! belongs to one service in the whole cluster. The leader picks ports from its view; this
//! check makes `apply` refuse the second of two proposals that picked the same port from
//! the same view (two managers creating services at once), so both cannot win.

use super::State;
use rswarm_proto::model::{CommandError, PublishMode, Service};
use std::collections::BTreeSet;

impl State {
    pub(super) fn check_service_ports(&self, svc: &Service) -> Result<(), CommandError> {
        let mut mine = BTreeSet::new();
        for p in &svc.endpoint.ports {
            if p.published == 0 {
                return Err(CommandError::Invalid(format!(
                    "port {}/{} of service {} has no published port",
                    p.target,
                    p.protocol.as_str(),
                    svc.spec.name
                )));
            }
            if !mine.insert((p.protocol, p.published, p.mode)) {
                return Err(CommandError::Invalid(format!(
                    "port {}/{} is published twice",
                    p.published,
                    p.protocol.as_str()
                )));
            }
            if p.mode != PublishMode::Ingress {
                continue;
            }
            let by = self.services.values().find(|o| {
                o.id != svc.id
                    && o.endpoint.ports.iter().any(|q| {
                        q.mode == PublishMode::Ingress
                            && q.protocol == p.protocol
                            && q.published == p.published
                    })
            });
            if let Some(o) = by {
                // A conflict, not a refusal: the proposer picks again from a fresh view and
                // then says which service holds the port.
                return Err(CommandError::Conflict(format!(
                    "port {}/{} is already published by service {}",
                    p.published,
                    p.protocol.as_str(),
                    o.spec.name
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rswarm_proto::model::{
        Command, CommandError, PortConfig, Protocol, PublishMode, Service, ServiceSpec,
    };

    use super::State;

    fn svc(id: &str, ports: &[(u16, PublishMode)]) -> Service {
        let mut s = Service {
            id: id.into(),
            spec: ServiceSpec {
                name: format!("svc-{id}"),
                ..Default::default()
            },
            ..Default::default()
        };
        s.endpoint.ports = ports
            .iter()
            .map(|&(published, mode)| PortConfig {
                protocol: Protocol::Tcp,
                target: 80,
                published,
                mode,
            })
            .collect();
        s
    }

    fn create(s: &mut State, index: u64, svc: Service) -> Result<(), CommandError> {
        s.apply(index, &Command::CreateService(Box::new(svc)))
            .map(|_| ())
    }

    #[test]
    fn a_mesh_port_belongs_to_one_service() {
        let mut s = State::default();
        create(&mut s, 1, svc("a", &[(8080, PublishMode::Ingress)])).unwrap();
        let before = s.clone();
        // Two proposals made from the same view: the second loses, and nothing changes.
        let err = create(&mut s, 2, svc("b", &[(8080, PublishMode::Ingress)])).unwrap_err();
        assert!(
            matches!(&err, CommandError::Conflict(m) if m.contains("svc-a")),
            "{err:?}"
        );
        assert_eq!(s, before);
        // The same number over UDP, or in host mode, is another port.
        let mut udp = svc("c", &[(8080, PublishMode::Ingress)]);
        udp.endpoint.ports[0].protocol = Protocol::Udp;
        create(&mut s, 3, udp).unwrap();
        create(&mut s, 4, svc("d", &[(8080, PublishMode::Host)])).unwrap();
        // A service may keep its own port across an update.
        let mut a = s.services[&"a".into()].clone();
        a.spec.labels.insert("k".into(), "v".into());
        s.apply(5, &Command::UpdateService(Box::new(a))).unwrap();
    }

    #[test]
    fn unpublished_or_repeated_ports_are_refused() {
        let mut s = State::default();
        let err = create(&mut s, 1, svc("a", &[(0, PublishMode::Ingress)])).unwrap_err();
        assert!(matches!(err, CommandError::Invalid(_)), "{err:?}");
        let twice = svc(
            "b",
            &[(8080, PublishMode::Ingress), (8080, PublishMode::Ingress)],
        );
        let err = create(&mut s, 2, twice).unwrap_err();
        assert!(matches!(err, CommandError::Invalid(_)), "{err:?}");
        assert!(s.services.is_empty());
    }
}
