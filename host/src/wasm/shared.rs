//! Shared data and shared queues, one store per process shared by every worker's VMs with the
//! same `vm_id` (Envoy's semantics). Behind a lock: modules reach it only when they ask.

use std::collections::{HashMap, VecDeque};
use std::sync::{LazyLock, Mutex, PoisonError};
use tokio::sync::mpsc::UnboundedSender;
use weir_abi::Status;

/// One shared-data value and its compare-and-swap version.
struct Entry {
    value: Vec<u8>,
    cas: u32,
}

/// Shared data by (vm_id, key).
type DataMap = HashMap<(String, Vec<u8>), Entry>;

static DATA: LazyLock<Mutex<DataMap>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The value of `key` and its CAS version; `NotFound` when absent.
pub fn get_data(vm_id: &str, key: &[u8]) -> Result<(Vec<u8>, u32), Status> {
    let data = DATA.lock().unwrap_or_else(PoisonError::into_inner);
    data.get(&(vm_id.to_string(), key.to_vec()))
        .map(|entry| (entry.value.clone(), entry.cas))
        .ok_or(Status::NotFound)
}

/// Stores `value` at `key`. `cas` 0 writes unconditionally; otherwise it must be the current
/// version (`CasMismatch` if not).
pub fn set_data(vm_id: &str, key: &[u8], value: Vec<u8>, cas: u32) -> Result<(), Status> {
    let mut data = DATA.lock().unwrap_or_else(PoisonError::into_inner);
    let entry = data
        .entry((vm_id.to_string(), key.to_vec()))
        .or_insert(Entry {
            value: Vec::new(),
            cas: 0,
        });
    if cas != 0 && cas != entry.cas {
        return Err(Status::CasMismatch);
    }
    entry.value = value;
    entry.cas = entry.cas.wrapping_add(1).max(1);
    Ok(())
}

struct Queue {
    items: VecDeque<Vec<u8>>,
    /// The VMs that registered the queue; each gets the queue id when an item arrives.
    owners: Vec<UnboundedSender<u32>>,
}

#[derive(Default)]
struct Queues {
    next_id: u32,
    by_name: HashMap<(String, String), u32>,
    queues: HashMap<u32, Queue>,
}

static QUEUES: LazyLock<Mutex<Queues>> = LazyLock::new(|| Mutex::new(Queues::default()));

/// Most items a queue holds; enqueueing beyond fails with `InternalFailure`.
const MAX_QUEUE_ITEMS: usize = 10_000;

/// Registers (or joins) the queue `name` of `vm_id`; `owner` is told when items arrive.
pub fn register_queue(vm_id: &str, name: &str, owner: Option<UnboundedSender<u32>>) -> u32 {
    let mut queues = QUEUES.lock().unwrap_or_else(PoisonError::into_inner);
    let key = (vm_id.to_string(), name.to_string());
    let id = match queues.by_name.get(&key) {
        Some(id) => *id,
        None => {
            queues.next_id += 1;
            let id = queues.next_id;
            queues.by_name.insert(key, id);
            queues.queues.insert(
                id,
                Queue {
                    items: VecDeque::new(),
                    owners: Vec::new(),
                },
            );
            id
        }
    };
    if let (Some(owner), Some(queue)) = (owner, queues.queues.get_mut(&id)) {
        queue.owners.retain(|o| !o.is_closed());
        queue.owners.push(owner);
    }
    id
}

/// The id of `vm_id`'s queue `name`; `NotFound` when nobody registered it.
pub fn resolve_queue(vm_id: &str, name: &str) -> Result<u32, Status> {
    let queues = QUEUES.lock().unwrap_or_else(PoisonError::into_inner);
    queues
        .by_name
        .get(&(vm_id.to_string(), name.to_string()))
        .copied()
        .ok_or(Status::NotFound)
}

/// Appends `value` to queue `id` and wakes its owners.
pub fn enqueue(id: u32, value: Vec<u8>) -> Result<(), Status> {
    let mut queues = QUEUES.lock().unwrap_or_else(PoisonError::into_inner);
    let queue = queues.queues.get_mut(&id).ok_or(Status::NotFound)?;
    if queue.items.len() >= MAX_QUEUE_ITEMS {
        return Err(Status::InternalFailure);
    }
    queue.items.push_back(value);
    queue.owners.retain(|owner| owner.send(id).is_ok());
    Ok(())
}

/// Takes the oldest item of queue `id`; `Empty` when there is none.
pub fn dequeue(id: u32) -> Result<Vec<u8>, Status> {
    let mut queues = QUEUES.lock().unwrap_or_else(PoisonError::into_inner);
    let queue = queues.queues.get_mut(&id).ok_or(Status::NotFound)?;
    queue.items.pop_front().ok_or(Status::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_detects_concurrent_writes() {
        let vm = "shared-test-cas";
        assert_eq!(get_data(vm, b"k"), Err(Status::NotFound));
        set_data(vm, b"k", b"1".to_vec(), 0).unwrap();
        let (value, cas) = get_data(vm, b"k").unwrap();
        assert_eq!(value, b"1");
        set_data(vm, b"k", b"2".to_vec(), cas).unwrap();
        assert_eq!(
            set_data(vm, b"k", b"3".to_vec(), cas),
            Err(Status::CasMismatch)
        );
        assert_eq!(get_data(vm, b"k").unwrap().0, b"2");
    }

    #[test]
    fn queue_wakes_owner_and_dequeues_in_order() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let id = register_queue("shared-test-q", "q", Some(tx));
        assert_eq!(resolve_queue("shared-test-q", "q"), Ok(id));
        assert_eq!(
            resolve_queue("shared-test-q", "other"),
            Err(Status::NotFound)
        );
        assert_eq!(dequeue(id), Err(Status::Empty));
        enqueue(id, b"a".to_vec()).unwrap();
        enqueue(id, b"b".to_vec()).unwrap();
        assert_eq!(rx.try_recv(), Ok(id));
        assert_eq!(dequeue(id).unwrap(), b"a");
        assert_eq!(dequeue(id).unwrap(), b"b");
    }
}
