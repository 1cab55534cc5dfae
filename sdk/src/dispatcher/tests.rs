use std::rc::Rc;

use super::*;

type Journal = Rc<RefCell<Vec<String>>>;

struct Root {
    journal: Journal,
    wants_http: bool,
}

struct Http {
    id: u32,
    journal: Journal,
}

struct Stream {
    journal: Journal,
}

impl RootContext for Root {
    fn on_vm_start(&mut self, size: usize) -> bool {
        self.journal.borrow_mut().push(format!("vm_start {size}"));
        true
    }

    fn on_configure(&mut self, size: usize) -> bool {
        self.journal.borrow_mut().push(format!("configure {size}"));
        size > 0
    }

    fn on_http_call_response(&mut self, token: u32, _: usize, _: usize, _: usize) {
        self.journal
            .borrow_mut()
            .push(format!("root callout {token}"));
    }

    fn create_http_context(&mut self, id: u32) -> Option<Box<dyn HttpContext>> {
        self.journal.borrow_mut().push(format!("create http {id}"));
        self.wants_http.then(|| {
            Box::new(Http {
                id,
                journal: self.journal.clone(),
            }) as Box<dyn HttpContext>
        })
    }

    fn create_stream_context(&mut self, id: u32) -> Option<Box<dyn StreamContext>> {
        self.journal
            .borrow_mut()
            .push(format!("create stream {id}"));
        Some(Box::new(Stream {
            journal: self.journal.clone(),
        }))
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, n: usize, eos: bool) -> Action {
        self.journal
            .borrow_mut()
            .push(format!("{} request_headers {n} {eos}", self.id));
        Action::Pause
    }

    fn on_http_call_response(&mut self, token: u32, n: usize, _: usize, _: usize) {
        self.journal
            .borrow_mut()
            .push(format!("{} callout {token} {n}", self.id));
    }

    fn on_log(&mut self) {
        self.journal.borrow_mut().push(format!("{} log", self.id));
    }

    fn on_done(&mut self) -> bool {
        self.journal.borrow_mut().push(format!("{} done", self.id));
        true
    }
}

impl StreamContext for Stream {
    fn on_downstream_data(&mut self, size: usize, _: bool) -> Action {
        self.journal.borrow_mut().push(format!("downstream {size}"));
        Action::Pause
    }

    fn on_upstream_close(&mut self, peer: PeerType) {
        self.journal
            .borrow_mut()
            .push(format!("upstream close {peer:?}"));
    }
}

fn setup(wants_http: bool) -> (Dispatcher, Journal) {
    let journal: Journal = Rc::default();
    let d = Dispatcher::default();
    let j = journal.clone();
    d.on_context_create(1, 0, &move |_| {
        Box::new(Root {
            journal: j.clone(),
            wants_http,
        })
    });
    (d, journal)
}

fn entries(journal: &Journal) -> Vec<String> {
    journal.borrow_mut().drain(..).collect()
}

#[test]
fn root_callbacks_reach_the_root() {
    let (d, journal) = setup(true);
    assert_eq!(d.with_root(1, |r| r.on_vm_start(3)), Some(true));
    assert_eq!(d.with_root(1, |r| r.on_configure(0)), Some(false));
    assert_eq!(d.with_root(9, |r| r.on_configure(5)), None);
    assert_eq!(entries(&journal), ["vm_start 3", "configure 0"]);
}

#[test]
fn http_child_is_created_on_its_first_http_callback() {
    let (d, journal) = setup(true);
    d.on_context_create(2, 1, &|_| unreachable!("not a root"));
    assert!(entries(&journal).is_empty());
    let action = d.http_action(2, |c| c.on_http_request_headers(4, true));
    assert_eq!(action, Action::Pause);
    // Default methods: Continue.
    assert_eq!(
        d.http_action(2, |c| c.on_http_response_headers(1, false)),
        Action::Continue
    );
    d.on_log(2);
    assert!(d.on_done(2));
    d.on_delete(2);
    assert_eq!(
        d.http_action(2, |c| c.on_http_request_headers(1, true)),
        Action::Continue
    );
    assert_eq!(
        entries(&journal),
        [
            "create http 2",
            "2 request_headers 4 true",
            "2 log",
            "2 done"
        ]
    );
}

#[test]
fn declined_streams_pass_through() {
    let (d, journal) = setup(false);
    d.on_context_create(2, 1, &|_| unreachable!("not a root"));
    for _ in 0..2 {
        assert_eq!(
            d.http_action(2, |c| c.on_http_request_headers(1, true)),
            Action::Continue
        );
    }
    assert_eq!(entries(&journal), ["create http 2"]);
}

#[test]
fn l4_child_becomes_a_stream_context() {
    let (d, journal) = setup(true);
    d.on_context_create(3, 1, &|_| unreachable!("not a root"));
    assert_eq!(
        d.stream_action(3, |c| c.on_downstream_data(10, false)),
        Action::Pause
    );
    d.on_close(3, 2, false);
    d.on_close(3, 77, false);
    // Now a stream: HTTP callbacks do not reach it.
    assert_eq!(
        d.http_action(3, |c| c.on_http_request_headers(1, true)),
        Action::Continue
    );
    assert_eq!(
        entries(&journal),
        [
            "create stream 3",
            "downstream 10",
            "upstream close Remote",
            "upstream close Unknown"
        ]
    );
}

#[test]
fn unknown_ids_get_defaults_not_panics() {
    let (d, _) = setup(true);
    d.on_context_create(5, 42, &|_| unreachable!("not a root"));
    assert_eq!(
        d.http_action(5, |c| c.on_http_request_headers(1, true)),
        Action::Continue
    );
    assert_eq!(
        d.stream_action(99, |c| c.on_new_connection()),
        Action::Continue
    );
    d.on_log(99);
    assert!(d.on_done(99));
    d.on_delete(99);
    d.on_http_call_response(1, 7, 0, 0, 0);
}

#[test]
fn callout_answers_go_to_the_context_that_dispatched_them() {
    let (d, journal) = setup(true);
    d.on_context_create(2, 1, &|_| unreachable!("not a root"));
    d.with_http(2, |_| d.register_callout(11));
    d.with_root(1, |_| d.register_callout(12));
    // The host addresses both to the root.
    d.on_http_call_response(1, 11, 3, 0, 0);
    d.on_http_call_response(1, 12, 0, 0, 0);
    let log = entries(&journal);
    assert_eq!(log[1..], ["2 callout 11 3", "root callout 12"]);
}

#[test]
fn deleting_a_context_forgets_its_callouts() {
    let (d, journal) = setup(true);
    d.on_context_create(2, 1, &|_| unreachable!("not a root"));
    d.with_http(2, |_| d.register_callout(11));
    d.on_delete(2);
    d.on_http_call_response(1, 11, 0, 0, 0);
    assert_eq!(entries(&journal), ["create http 2", "root callout 11"]);
}

#[test]
fn a_context_deleted_during_its_callback_stays_deleted() {
    let (d, journal) = setup(true);
    d.on_context_create(2, 1, &|_| unreachable!("not a root"));
    d.with_http(2, |_| d.on_delete(2));
    assert!(!d.child_is(2, |_| true), "put back after its delete");
    assert_eq!(entries(&journal), ["create http 2"]);
}

#[test]
fn a_callback_reentering_a_running_context_gets_the_default() {
    let (d, journal) = setup(true);
    d.on_context_create(2, 1, &|_| unreachable!("not a root"));
    let inner = d.with_http(2, |_| {
        d.http_action(2, |c| c.on_http_request_headers(1, true))
    });
    assert_eq!(inner, Some(Action::Continue));
    // The context is back and answers as itself.
    assert_eq!(
        d.http_action(2, |c| c.on_http_request_headers(4, false)),
        Action::Pause
    );
    assert_eq!(
        entries(&journal),
        ["create http 2", "2 request_headers 4 false"]
    );
}
