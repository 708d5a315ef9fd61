package streams

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BucketLeases holds who takes part in each partitioned stage and who owns
// each of its partitions (see pipeline): small keys renewed every second,
// so one revision of history. A key nobody renews for an hour (a member
// that died) is removed.
const BucketLeases = "leases"

// Partitioned declares a stage whose work is shared by symbol between its
// instances: one durable consumer per symbol, named and filtered from the
// stage's name, each owned by one instance at a time. The consumers are
// created by the stage runner when a symbol first appears in the stream,
// not by Ensure, since the symbols are only known from the data.
type Partitioned struct {
	// Stage names the stage ("features"); its consumers are
	// <Stage>-<SYMBOL-TOKEN>.
	Stage  string
	Stream string
	// Root is the subject root of the stream's per-symbol subjects,
	// <root>.<interval>.<SYMBOL-TOKEN>.
	Root string
	// Legacy is the single durable the stage read before it was
	// partitioned: a symbol's consumer created while it exists starts
	// where it had got to, not at the stream's start.
	Legacy string
	// Config is every partition consumer's configuration but its name
	// and filter.
	Config jetstream.ConsumerConfig
	// Outputs are the streams the stage publishes to that hold fence
	// subjects (FenceFilter), the ones its partitions' owners are fenced
	// in: a new owner writes its marker into each as it takes the
	// partition, and the server checks the owner's outputs against it.
	Outputs []string
}

// Filter matches every subject the stage reads, of every symbol.
func (p Partitioned) Filter() string { return p.Root + ".*.*" }

// Partition is the symbol a subject of the stage's stream belongs to.
func (p Partitioned) Partition(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, p.Root+".")
	if !ok {
		return "", false
	}
	_, tok, ok := strings.Cut(rest, ".")
	if !ok || tok == "" || strings.Contains(tok, ".") {
		return "", false
	}
	if _, err := SymbolFromToken(tok); err != nil {
		return "", false
	}
	return tok, true
}

// Consumer is the durable consumer of one partition (a symbol token).
func (p Partitioned) Consumer(partition string) ConsumerSpec {
	cfg := p.Config
	cfg.Durable = p.Stage + "-" + partition
	cfg.Name = ""
	cfg.FilterSubject = p.Root + ".*." + partition
	cfg.FilterSubjects = nil
	return ConsumerSpec{Stream: p.Stream, Config: cfg}
}

// partitioned declares a stage's per-symbol consumers from the settings of
// its single consumer c. The lease, not the pin, decides who consumes; the
// pin is the server's guard that two instances never both receive, and
// the new owner lifts a dead owner's pin at once, so its TTL only has to
// outlast a pause in pulling.
func partitioned(stage, root string, c ConsumerSpec, outputs ...string) Partitioned {
	cfg := c.Config
	cfg.PinnedTTL = 30 * time.Second
	return Partitioned{Stage: stage, Stream: c.Stream, Root: root, Legacy: c.Config.Durable, Config: cfg, Outputs: outputs}
}

// DataMsgs is how many messages a stream holds beside its fence markers:
// its data, for a count that a change of partition owner must not move.
func DataMsgs(ctx context.Context, st jetstream.Stream) (uint64, error) {
	name := st.CachedInfo().Config.Name
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(FenceFilter(name)))
	if err != nil {
		return 0, fmt.Errorf("streams: info %s: %w", name, err)
	}
	n := info.State.Msgs
	for _, k := range info.State.Subjects {
		n -= k
	}
	return n, nil
}
