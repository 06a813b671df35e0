package httpapi

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/pipeline/instrument"
)

// unmatchedRoute labels requests that reached no route (404, 405, path redirects), so that a
// client cannot create label values with made-up paths.
const unmatchedRoute = "unmatched"

// httpMetrics are the server's request metrics. Labels are bounded: a known method or
// "OTHER", a registered route pattern or "unmatched", and the status code.
type httpMetrics struct {
	requests *prometheus.CounterVec   // method, route, code
	duration *prometheus.HistogramVec // method, route
	inFlight prometheus.Gauge
	// rejected counts requests and connections turned away by a limit, by reason:
	// connections, rate, feeds, spool, unavailable, admission, cross_origin.
	rejected *prometheus.CounterVec
}

func newHTTPMetrics(reg prometheus.Registerer) (*httpMetrics, error) {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sluice", Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests answered, by method, route pattern and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "sluice", Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Time from reading an HTTP request's headers to the handler's return, by method and route pattern.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 30, 120},
		}, []string{"method", "route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "sluice", Subsystem: "http", Name: "requests_in_flight",
			Help: "HTTP requests being handled.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sluice", Subsystem: "http", Name: "rejected_total",
			Help: "Connections and requests turned away by a limit (connections, rate, feeds, spool, admission), because a dependency was unavailable, or as a cross-origin browser request (cross_origin).",
		}, []string{"reason"}),
	}
	var err error
	m.rejected, err = instrument.Register(reg, m.rejected)
	if err != nil {
		return nil, err
	}
	// Every reason from the start, so that a rate over it sees the first rejection.
	for _, r := range []string{"connections", "rate", "feeds", "spool", "unavailable", "admission", "cross_origin"} {
		m.rejected.WithLabelValues(r)
	}
	m.requests, err = instrument.Register(reg, m.requests)
	if err != nil {
		return nil, err
	}
	m.duration, err = instrument.Register(reg, m.duration)
	if err != nil {
		return nil, err
	}
	m.inFlight, err = instrument.Register(reg, m.inFlight)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// methodLabel bounds the method label to the standard methods.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}

func (m *httpMetrics) observe(method, route string, code int, seconds float64) {
	method = methodLabel(method)
	m.requests.WithLabelValues(method, route, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(method, route).Observe(seconds)
}
