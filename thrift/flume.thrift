// Event transport between agents and collectors. Loaded at run time with thriftpy2
// (module_name="flume_thrift"); this file is the source of truth.

namespace py flume_thrift

enum Priority {
  FATAL = 0,
  ERROR = 1,
  WARN = 2,
  INFO = 3,
  DEBUG = 4,
  TRACE = 5
}

struct ThriftFlumeEvent {
  1: i64 timestamp,
  2: Priority priority,
  3: binary body,
  4: i64 nanos,
  5: string host,
  6: map<string, binary> fieldss
}

enum Status {
  OK = 0,          // every event of the batch is accepted
  RETRY = 1,       // the receiver is busy: send the same batch again after a pause
  FAILED = 2       // the receiver cannot take it (message says why)
}

struct AppendResult {
  1: Status status,
  2: string message
}

service ThriftFlumeEventServer {
  // The original one-event append, kept for compatibility (no flow control).
  oneway void append(1: ThriftFlumeEvent evt),
  // Batched append: the sender learns the outcome, the receiver can push back.
  // Optional, and ignored by receivers that predate them (unknown fields are skipped):
  // `sender` and `batch` identify the batch -- a resend of the same id is acknowledged
  // without being written twice while the receiver remembers it (a bounded window per
  // sender); `timeoutMs` is the caller's deadline, relative (as gRPC's grpc-timeout: no
  // clock sync needed): how long the caller waits for the answer once it has sent the
  // request. The receiver counts it from when the request has arrived whole; past it the
  // caller has given up, and the receiver drops what it has not started writing.
  AppendResult appendBatch(1: list<ThriftFlumeEvent> events, 2: string sender,
                           3: i64 batch, 4: i32 timeoutMs),
  // The same, with the events packed by the project's batch codec (node/codec.py): one
  // binary field instead of a struct per event, so large batches decode fast.
  AppendResult appendPacked(1: binary payload, 2: i32 count, 3: string sender,
                            4: i64 batch, 5: i32 timeoutMs),
  // End-to-end: one write-ahead-log group of an agent. `seq` numbers the agent's groups,
  // `checksum` is the CRC-32 of `payload`. OK means the group was accepted (or was already
  // committed); its acknowledgement comes later, through ZooKeeper (docs/e2e.md).
  AppendResult appendGroup(1: string agent, 2: i64 seq, 3: i64 checksum,
                           4: binary payload, 5: i32 count),
  void close()
}
