package intake

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/telemetry"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/graph"
	"github.com/sluice-dev/sluice/sources/files"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// MaxGraphFileBytes bounds a graph file: unlike chunk files, graph files are decoded whole
// (their edges refer to nodes anywhere in the file).
const MaxGraphFileBytes = 256 << 20

// loadGraph publishes a graph file (GraphStore batch, Pass E snapshot or legacy Pass C graph)
// as one job of graph batch messages: nodes first, then edges, each message at most
// MaxGraphMessageBytes. The BatchWriter stores them in that order and the graph consumer
// applies them one at a time in stream order, so every edge finds its nodes.
func (l *Loader) loadGraph(ctx context.Context, req LoadRequest, src *spooled, jobID string, res LoadResult) (LoadResult, error) {
	if size, err := src.size(); err == nil && size > MaxGraphFileBytes {
		return res, fmt.Errorf("%w: %s: graph file of %d bytes is over the %d-byte limit", ErrBadInput, req.File, size, MaxGraphFileBytes)
	}
	f, err := src.open()
	if err != nil {
		return res, fmt.Errorf("open %s: %w", req.File, err)
	}
	defer f.Close()
	// A graph file may be gzip or zstd compressed, as chunk files may (files.Decompress).
	d, err := files.Decompress(bufio.NewReaderSize(f, 64<<10), req.File, MaxGraphFileBytes)
	if err != nil {
		return res, err
	}
	defer d.Close()
	batch, warnings, format, err := graph.Decode(io.LimitReader(d, MaxGraphFileBytes))
	if err != nil {
		return res, fmt.Errorf("%w: %s is not a chunk file (no chunks, vectorized_chunks, items or enriched_chunks array), and as a graph file: %w", ErrBadInput, req.File, err)
	}
	parts, err := splitGraphBatch(batch, l.cfg.MaxGraphMessageBytes)
	if err != nil {
		return res, fmt.Errorf("%w: %s: %w", ErrBadInput, req.File, err)
	}
	open := schemas.JobOpen{JobID: jobID, Env: req.Env, File: req.File, Format: string(format), CreatedAt: time.Now().UTC()}
	if err := l.openJob(ctx, open, &res); err != nil {
		return res, err
	}
	w := sjs.NewBatchWriter(ctx, l.cfg.JS, l.cfg.Batch)
	for i, p := range parts {
		m := nats.NewMsg(schemas.GraphSubject(req.Env))
		m.Data = p
		m.Header.Set(nats.MsgIdHdr, cmp.Or(res.msgJob, jobID)+"/graph/"+strconv.Itoa(i))
		m.Header.Set(schemas.HeaderJob, jobID)
		m.Header.Set(schemas.HeaderItem, strconv.Itoa(i))
		telemetry.Inject(ctx, m.Header)
		if err := w.Add(m); err != nil {
			_ = w.Close()
			return res, fmt.Errorf("publish job %s: %w", jobID, err)
		}
	}
	if err := w.Close(); err != nil {
		return res, fmt.Errorf("publish job %s: %w", jobID, err)
	}
	res.Total, res.Published = int64(len(parts)), int64(len(parts))
	for _, wn := range warnings {
		if len(res.Warnings) == schemas.MaxIssues {
			break
		}
		// Warnings name their item in the source file; they belong to no message.
		res.Warnings = append(res.Warnings, jobs.ItemIssue{Index: 0, ID: wn.Item, Reason: wn.Reason})
	}
	if len(parts) == 0 {
		res.Warnings = nil // a seal's issues must name an item of the job
	}
	seal := schemas.JobSeal{JobID: jobID, Env: req.Env, Total: res.Total, Published: res.Published, Warnings: res.Warnings, SealedAt: time.Now().UTC()}
	if err := l.sealJob(ctx, seal, res.msgJob); err != nil {
		return res, err
	}
	res.State = jobs.JobRunning
	return res, nil
}

// splitGraphBatch encodes b as GraphStore batch messages of at most maxBytes each: all the
// nodes first, then the edges. A single node or edge over maxBytes is an error.
func splitGraphBatch(b graph.Batch, maxBytes int) ([][]byte, error) {
	var out [][]byte
	var cur graph.Batch
	size := 0
	flush := func() error {
		if len(cur.Nodes)+len(cur.Edges) == 0 {
			return nil
		}
		if cur.Nodes == nil {
			cur.Nodes = []graph.Node{}
		}
		if cur.Edges == nil {
			cur.Edges = []graph.Edge{}
		}
		enc, err := json.Marshal(cur)
		if err != nil {
			return fmt.Errorf("encode graph batch: %w", err)
		}
		out = append(out, enc)
		cur, size = graph.Batch{}, 0
		return nil
	}
	const overhead = 32
	for _, n := range b.Nodes {
		enc, err := json.Marshal(n)
		if err != nil {
			return nil, fmt.Errorf("encode node %s: %w", n.ID, err)
		}
		if len(enc)+overhead > maxBytes {
			return nil, fmt.Errorf("node %s is %d bytes, over the message limit of %d", n.ID, len(enc), maxBytes)
		}
		if size+len(enc)+overhead > maxBytes {
			if err := flush(); err != nil {
				return nil, err
			}
		}
		cur.Nodes = append(cur.Nodes, n)
		size += len(enc) + 1
	}
	if err := flush(); err != nil {
		return nil, err
	}
	for _, e := range b.Edges {
		enc, err := json.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("encode edge %s: %w", e.ID, err)
		}
		if len(enc)+overhead > maxBytes {
			return nil, fmt.Errorf("edge %s is %d bytes, over the message limit of %d", e.ID, len(enc), maxBytes)
		}
		if size+len(enc)+overhead > maxBytes {
			if err := flush(); err != nil {
				return nil, err
			}
		}
		cur.Edges = append(cur.Edges, e)
		size += len(enc) + 1
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}
