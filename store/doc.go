// Package store is the contract between wgkeeper's lifecycle and its
// database: the domain types (Peer, Event, their filters, states, reasons
// and statuses), the sentinel errors checked with errors.Is, the address
// arithmetic every backend shares (Capacity, HostAddr, AvoidSpans), the
// byte-counter arithmetic of events and sessions (CounterDelta, SatAdd),
// and the Store interface that a backend implements.
//
// It holds no SQL and no driver: backends live below it (store/sqlite,
// store/postgres) and
// each passes the conformance suite in store/storetest, which turns the
// guarantees written on Store into tests. The lifecycle engine, the API and
// the CLI's commands depend on this package only; the CLI's wiring picks
// and opens a backend.
package store
