package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/pipeline/intake"
)

// uploadBody wraps r's body in the upload limit and the spool budget. A declared size
// (Content-Length) over the limit is answered 413 and one the spool cannot hold whole 503,
// before any byte is read; ok is then false. Otherwise the caller must release the body once
// the service has returned.
func (s *Server) uploadBody(w http.ResponseWriter, r *http.Request) (body *limitedBody, ok bool) {
	limit := s.cfg.MaxUploadBytes
	if r.ContentLength > limit {
		s.problem(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("The file is larger than the limit of %d bytes.", limit))
		return nil, false
	}
	// MaxBytesReader gets the server's own writer so that hitting the limit also tells the
	// server to close the connection instead of draining the rest of the body.
	body = &limitedBody{r: http.MaxBytesReader(innermost(w), r.Body, limit), spool: s.spool, limit: limit}
	if r.ContentLength > 0 {
		// A declared size is reserved whole, so a full spool answers before any byte is read.
		if !s.spool.TryTake(r.ContentLength) {
			s.spoolFull(w, r)
			return nil, false
		}
		body.reserved, body.declared = r.ContentLength, true
	}
	return body, true
}

// spoolFull answers 503: the uploads being received fill the spool budget.
func (s *Server) spoolFull(w http.ResponseWriter, r *http.Request) {
	s.metrics.rejected.WithLabelValues("spool").Inc()
	s.tooBusy(w, r, http.StatusServiceUnavailable, retrySpoolFull*time.Second,
		fmt.Sprintf("The server is receiving as many upload bytes as it spools at once (%d); retry later.", s.spool.Max()))
}

// innermost unwraps w down to the server's own ResponseWriter.
func innermost(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

// limitedBody is an upload's body: it remembers whether reading hit the upload limit or the
// body idle timeout (serveHTTP's idleBody renews the deadline on each read), so a service that
// reports the truncated read as a parse error still yields 413 or 408, and it reserves each
// byte read in the server's spool budget before handing it on (a body whose Content-Length was
// reserved up front reserves nothing more). Reads must not be concurrent (as for any
// io.Reader); the flags may be read from any goroutine. release gives the reservation back.
type limitedBody struct {
	r        io.Reader
	limit    int64 // the upload limit, for MaxBytes
	spool    *intake.ByteBudget
	reserved int64 // bytes taken from spool
	declared bool  // reserved holds the whole Content-Length: nothing more to take
	read     int64
	tooLarge atomic.Bool
	timedOut atomic.Bool
	full     atomic.Bool
}

// MaxBytes returns the upload limit; a JobService applies it to the uncompressed content of
// a compressed upload (SubmitRequest.Body).
func (b *limitedBody) MaxBytes() int64 { return b.limit }

func (b *limitedBody) Read(p []byte) (int, error) {
	// Reserve before reading, so the bytes that reach the spool were always accounted for.
	if need := b.read + int64(len(p)) - b.reserved; need > 0 && !b.declared {
		if !b.spool.TryTake(need) {
			b.full.Store(true)
			return 0, fmt.Errorf("read upload: %w", errSpoolFull)
		}
		b.reserved += need
	}
	n, err := b.r.Read(p)
	b.read += int64(n)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			b.tooLarge.Store(true)
		}
		if isDeadline(err) {
			b.timedOut.Store(true)
		}
	}
	return n, err
}

// release gives back every byte reserved; call once, after the service returned (the spool
// file is gone by then).
func (b *limitedBody) release() { b.spool.Give(b.reserved) }
