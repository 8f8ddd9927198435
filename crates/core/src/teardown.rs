//! Drops finished instances on a thread of their own.
//!
//! Freeing an instance hands its memory back to the OS (`madvise`), which
//! takes the process's memory-map lock; while a guest that grew a large
//! memory is being freed, or is growing, that lock can be held for
//! milliseconds. Doing it here keeps that wait off the reply of the call
//! that used the instance. The pool slot's permit travels with the
//! instance, so a slot is offered again only once it is really free.

use std::sync::mpsc::{Sender, channel};

/// A handle to the teardown thread.
#[derive(Clone)]
pub struct Teardown {
    tx: Sender<Box<dyn Send>>,
}

impl Teardown {
    /// Starts the thread; it ends when every handle is gone.
    pub fn start() -> std::io::Result<Self> {
        let (tx, rx) = channel::<Box<dyn Send>>();
        std::thread::Builder::new()
            .name("edge-teardown".into())
            .spawn(move || {
                while let Ok(finished) = rx.recv() {
                    drop(finished);
                }
            })?;
        Ok(Self { tx })
    }

    /// Drops `value` on the teardown thread (here, if it is gone).
    pub fn drop_later<T: Send + 'static>(&self, value: T) {
        // A failed send hands the value back, and it is dropped here.
        let _ = self.tx.send(Box::new(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Named(Arc<Mutex<Option<String>>>);

    impl Drop for Named {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = std::thread::current().name().map(str::to_owned);
        }
    }

    #[test]
    fn values_are_dropped_on_the_teardown_thread() {
        let t = Teardown::start().unwrap();
        let seen = Arc::new(Mutex::new(None));
        t.drop_later(Named(seen.clone()));
        for _ in 0..500 {
            if let Some(name) = seen.lock().unwrap().clone() {
                assert_eq!(name, "edge-teardown");
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        panic!("never dropped");
    }
}
