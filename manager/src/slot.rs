//! The cluster port serves manager APIs only while this node runs a manager; a node is
//! promoted and demoted while its listener stays up, so services reach the manager through
//! this slot.

use crate::manager::Manager;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Clone)]
pub struct ManagerSlot {
    rx: watch::Receiver<Option<Arc<Manager>>>,
}

/// Fills and empties the slot; held by the daemon.
pub struct ManagerSlotSetter {
    tx: watch::Sender<Option<Arc<Manager>>>,
}

pub fn manager_slot() -> (ManagerSlotSetter, ManagerSlot) {
    let (tx, rx) = watch::channel(None);
    (ManagerSlotSetter { tx }, ManagerSlot { rx })
}

impl ManagerSlot {
    /// The running manager, or the error every manager API gives on a worker.
    pub fn get(&self) -> Result<Arc<Manager>, tonic::Status> {
        self.rx
            .borrow()
            .clone()
            .ok_or_else(|| tonic::Status::failed_precondition("this node is not a manager"))
    }

    pub fn current(&self) -> Option<Arc<Manager>> {
        self.rx.borrow().clone()
    }
}

impl ManagerSlotSetter {
    pub fn set(&self, m: Option<Arc<Manager>>) {
        self.tx.send_replace(m);
    }

    pub fn current(&self) -> Option<Arc<Manager>> {
        self.tx.borrow().clone()
    }
}
