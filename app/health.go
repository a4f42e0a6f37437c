package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/pgcoord/pgcoord/internal/schema"
)

// HealthTimeout bounds the database checks of one [App.Health] call (when
// ctx has no earlier deadline).
const HealthTimeout = 2 * time.Second

// Names of the components in a [Health] report.
const (
	ComponentApp      = "app"
	ComponentDatabase = "database"
	ComponentSchema   = "schema"
	ComponentListen   = "listen"
	ComponentLocks    = "locks"
	ComponentQueue    = "queue"
)

// Health is an instance's health report: one entry per component.
type Health struct {
	// Healthy is true when every component is.
	Healthy    bool   `json:"healthy"`
	App        string `json:"app"`
	InstanceID string `json:"instance_id"`
	// Components, in a fixed order: app, database, schema, listen, locks, queue.
	Components []ComponentHealth `json:"components"`
}

// ComponentHealth is one component's state.
type ComponentHealth struct {
	Name    string `json:"name"`
	Healthy bool   `json:"healthy"`
	// Detail says why a component is unhealthy, or a short state when it is
	// healthy (e.g. the liveness session's backend pid).
	Detail string `json:"detail,omitempty"`
}

// Component returns the entry of component name, and whether there is one.
func (h Health) Component(name string) (ComponentHealth, bool) {
	for _, c := range h.Components {
		if c.Name == name {
			return c, true
		}
	}
	return ComponentHealth{}, false
}

// Health checks the instance: the app is started; the database answers a
// ping through the pool; the schema holds exactly the migrations this build
// expects; the pub/sub listener is connected and caught up; the lock
// manager's liveness session holds this instance's identity; the event
// queue consumes with its liveness session held. The database checks are
// bounded by ctx and HealthTimeout; the others read in-memory state.
func (a *App) Health(ctx context.Context) Health {
	ctx, cancel := context.WithTimeout(ctx, HealthTimeout)
	defer cancel()
	h := Health{App: a.cfg.Name, InstanceID: a.cfg.InstanceID}
	add := func(name string, ok bool, detail string) {
		h.Components = append(h.Components, ComponentHealth{Name: name, Healthy: ok, Detail: detail})
	}
	a.mu.Lock()
	st := a.state
	a.mu.Unlock()
	switch st {
	case stateStarted:
		add(ComponentApp, true, "started")
	case stateNew, stateStarting:
		add(ComponentApp, false, "not started")
	default:
		add(ComponentApp, false, "stopped")
	}
	if err := a.pool.Ping(ctx); err != nil {
		add(ComponentDatabase, false, fmt.Sprintf("ping: %v", err))
	} else {
		add(ComponentDatabase, true, "")
	}
	if err := schema.Check(ctx, a.pool, a.cfg.Schema); err != nil {
		add(ComponentSchema, false, err.Error())
	} else {
		add(ComponentSchema, true, fmt.Sprintf("version %d", schema.Version))
	}
	if a.pubsub.Healthy() {
		add(ComponentListen, true, fmt.Sprintf("reconnects %d", a.pubsub.Stats().Reconnects))
	} else {
		add(ComponentListen, false, "listener disconnected or catching up")
	}
	if live, pid := a.locks.Liveness(); live {
		add(ComponentLocks, true, fmt.Sprintf("liveness session pid %d", pid))
	} else {
		add(ComponentLocks, false, "liveness session lost or not started")
	}
	if a.queue.Running() {
		add(ComponentQueue, true, "")
	} else {
		add(ComponentQueue, false, "not consuming or liveness session lost")
	}
	h.Healthy = true
	for _, c := range h.Components {
		h.Healthy = h.Healthy && c.Healthy
	}
	return h
}

// HealthHandler serves [App.Health] as JSON: status 200 when every
// component is healthy, 503 otherwise. Mount it as a Kubernetes readiness
// (or liveness) probe: GET /healthz.
func (a *App) HealthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := a.Health(r.Context())
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if h.Healthy {
			w.WriteHeader(http.StatusOK)
		} else {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(h)
	})
}
