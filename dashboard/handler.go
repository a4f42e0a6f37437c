package dashboard

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"riverqueue.com/riverui"

	"github.com/pgcoord/pgcoord/migrations"
)

// Config configures a [Handler]. The zero value serves a read-only
// dashboard mounted at the server's root on schema "pgcoord".
type Config struct {
	// Prefix is the path the handler is mounted under, e.g. "/dashboard"
	// for mux.Handle("/dashboard/", h) (do not strip it: River UI needs
	// the full path). Defaults to "" (the root).
	Prefix string
	// Schema is the schema holding pgcoord's tables. Defaults to
	// migrations.DefaultSchema ("pgcoord").
	Schema string
	// Logger receives errors of pages and of the live tail. Defaults to
	// slog.Default().
	Logger *slog.Logger
	// AllowActions lets mutating requests through: River UI's retry,
	// cancel, delete and queue pause, and forcing a lock free. Defaults to
	// false: every request other than GET, HEAD and OPTIONS is refused with
	// 403. Requires ActionAuth.
	AllowActions bool
	// ActionAuth wraps every mutating request (after the cross-origin
	// check, before the CSRF token check and the action): it calls next
	// only for a request it approves. Required when AllowActions is true.
	ActionAuth func(next http.Handler) http.Handler
}

// RateMinutes is how many minutes the Channels page's rate chart covers.
const RateMinutes = 15

// csrfCookie is the double-submit CSRF cookie of the dashboard's own forms.
const csrfCookie = "pgcoord_dashboard_csrf"

// ErrInvalidConfig is wrapped by [NewHandler]'s configuration errors.
var ErrInvalidConfig = errors.New("dashboard: invalid config")

func (c *Config) withDefaults() Config {
	var out Config
	if c != nil {
		out = *c
	}
	if out.Schema == "" {
		out.Schema = migrations.DefaultSchema
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	out.Prefix = riverui.NormalizePathPrefix(out.Prefix)
	return out
}

func (c *Config) validate(pool *pgxpool.Pool) error {
	if pool == nil {
		return fmt.Errorf("%w: nil pool", ErrInvalidConfig)
	}
	if err := migrations.ValidateSchema(c.Schema); err != nil {
		return fmt.Errorf("%w: Schema: %w", ErrInvalidConfig, err)
	}
	if c.AllowActions && c.ActionAuth == nil {
		return fmt.Errorf("%w: AllowActions needs ActionAuth (the middleware that approves mutating requests)", ErrInvalidConfig)
	}
	if strings.ContainsAny(c.Prefix, "?#\"'<> ") {
		return fmt.Errorf("%w: Prefix must be a plain path", ErrInvalidConfig)
	}
	return nil
}

// Handler serves the dashboard. Routes, relative to Config.Prefix:
//
//	GET  /                 redirect to /cluster
//	GET  /cluster          instances, schema and server (JSON: /api/cluster)
//	GET  /channels         rates, latest messages, live tail (JSON: /api/channels)
//	GET  /locks            held, taken over and lost leases (JSON: /api/locks)
//	GET  /caches           entries, bytes, expired per cache (JSON: /api/caches)
//	GET  /api/tail         Server-Sent Events: one "message" event per published message
//	POST /locks/free       force a lease free (only with AllowActions)
//	     /queue/...        River UI
type Handler struct {
	cfg    Config
	pool   *pgxpool.Pool
	q      *queries
	mux    *http.ServeMux
	pages  map[string]*template.Template
	tail   *tail
	cop    *http.CrossOriginProtection
	secure http.Handler // the whole handler with the security layer
}

//go:embed assets templates
var files embed.FS

// NewHandler returns the dashboard for the database pool is connected to.
// It does not touch the database; pages query it when they are requested.
// Close it when done to end open live-tail streams.
func NewHandler(pool *pgxpool.Pool, cfg *Config) (*Handler, error) {
	c := cfg.withDefaults()
	if err := c.validate(pool); err != nil {
		return nil, err
	}
	h := &Handler{cfg: c, pool: pool, q: newQueries(pool, c.Schema), tail: newTail(pool, c.Schema, c.Logger),
		mux: http.NewServeMux(), cop: http.NewCrossOriginProtection()}
	if err := h.parseTemplates(); err != nil {
		return nil, err
	}
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Schema: c.Schema, Logger: c.Logger})
	if err != nil {
		return nil, fmt.Errorf("dashboard: river client: %w", err)
	}
	ui, err := riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints: riverui.NewEndpoints(rc, nil),
		Logger:    c.Logger,
		Prefix:    c.Prefix + "/queue",
	})
	if err != nil {
		return nil, fmt.Errorf("dashboard: river ui: %w", err)
	}
	h.routes(ui)
	h.secure = h.security(h.mux)
	return h, nil
}

// Close ends every open live-tail stream and the tail's connection. The
// pages keep working (a later tail request opens a new connection).
func (h *Handler) Close() { h.tail.close() }

// ServeHTTP serves one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.secure.ServeHTTP(w, r) }

func (h *Handler) routes(ui http.Handler) {
	p := h.cfg.Prefix
	h.mux.Handle(p+"/queue/", ui)
	h.mux.Handle(p+"/queue", ui)
	h.mux.HandleFunc("GET "+p+"/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, p+"/cluster", http.StatusFound)
	})
	if p != "" {
		h.mux.HandleFunc("GET "+p, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, p+"/cluster", http.StatusFound)
		})
	}
	sub, _ := fs.Sub(files, "assets")
	h.mux.Handle("GET "+p+"/assets/", http.StripPrefix(p+"/assets/", http.FileServerFS(sub)))
	page(h, "cluster", h.q.cluster)
	page(h, "channels", h.q.channels)
	page(h, "locks", h.q.locks)
	page(h, "caches", h.q.caches)
	h.mux.HandleFunc("GET "+p+"/api/tail", h.serveTail)
	h.mux.HandleFunc("POST "+p+"/locks/free", h.forceFree)
}

// page registers GET /<name> (HTML) and GET /api/<name> (JSON) for one
// page whose data load returns.
func page[T any](h *Handler, name string, load func(context.Context) (T, error)) {
	p := h.cfg.Prefix
	h.mux.HandleFunc("GET "+p+"/api/"+name, func(w http.ResponseWriter, r *http.Request) {
		data, err := load(r.Context())
		if err != nil {
			h.fail(w, r, name, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(data)
	})
	h.mux.HandleFunc("GET "+p+"/"+name, func(w http.ResponseWriter, r *http.Request) {
		data, err := load(r.Context())
		if err != nil {
			h.fail(w, r, name, err)
			return
		}
		h.render(w, r, name, data)
	})
}

// view is what every page template receives.
type view struct {
	Prefix       string
	Page         string
	Schema       string
	AllowActions bool
	CSRF         string
	Data         any
}

func (h *Handler) parseTemplates() error {
	h.pages = map[string]*template.Template{}
	funcs := template.FuncMap{"ms": formatMillis, "bytes": formatBytes, "pages": func() []string { return pageNames }}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return fmt.Errorf("dashboard: template %s: %w", name, err)
		}
		h.pages[name] = t
	}
	return nil
}

func (h *Handler) render(w http.ResponseWriter, r *http.Request, name string, data any) {
	v := view{Prefix: h.cfg.Prefix, Page: name, Schema: h.cfg.Schema, AllowActions: h.cfg.AllowActions, Data: data}
	if h.cfg.AllowActions {
		v.CSRF = h.csrfToken(w, r)
	}
	var b strings.Builder
	if err := h.pages[name].Execute(&b, v); err != nil {
		h.fail(w, r, name, err)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "same-origin")
	_, _ = w.Write([]byte(b.String()))
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, what string, err error) {
	if r.Context().Err() != nil {
		return
	}
	h.cfg.Logger.ErrorContext(r.Context(), "dashboard: page failed", slog.String("component", "dashboard"), slog.String("page", what), slog.Any("error", err))
	http.Error(w, "dashboard: "+what+": could not read the database (see the server log)", http.StatusInternalServerError)
}

// security refuses every mutating request unless actions are allowed, and
// then sends it through cross-origin protection and the user's ActionAuth.
func (h *Handler) security(next http.Handler) http.Handler {
	var mutating http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "dashboard: read-only (actions are not enabled: Config.AllowActions)", http.StatusForbidden)
	})
	if h.cfg.AllowActions {
		mutating = h.cop.Handler(h.cfg.ActionAuth(next))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
		default:
			mutating.ServeHTTP(w, r)
		}
	})
}

// csrfToken returns the request's CSRF cookie value, setting a new random
// one when the request carries none.
func (h *Handler) csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 64 {
		return c.Value
	}
	var b [32]byte
	_, _ = rand.Read(b[:])
	tok := hex.EncodeToString(b[:])
	path := h.cfg.Prefix
	if path == "" {
		path = "/"
	}
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: tok, Path: path, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	return tok
}

// checkCSRF reports whether the form's token matches the cookie.
func checkCSRF(r *http.Request) bool {
	c, err := r.Cookie(csrfCookie)
	if err != nil || len(c.Value) != 64 {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostFormValue("csrf"))) == 1
}

// forceFree ends a lease by (app, key, token) with advisorylock.ForceRelease:
// like the holder's own release it never frees a later grant, and it hands
// the key to the first live instance waiting for it (notified at once). The
// holder sees the loss (Lock.Done) at its next renewal or CheckTx.
func (h *Handler) forceFree(w http.ResponseWriter, r *http.Request) {
	if !checkCSRF(r) {
		http.Error(w, "dashboard: missing or wrong CSRF token", http.StatusForbidden)
		return
	}
	app, key, token := r.PostFormValue("app"), r.PostFormValue("key"), r.PostFormValue("token")
	freed, err := h.q.forceFree(r.Context(), app, key, token)
	if err != nil {
		if errors.Is(err, errBadInput) {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.fail(w, r, "force free", err)
		return
	}
	h.cfg.Logger.WarnContext(r.Context(), "dashboard: lock forced free", slog.String("component", "dashboard"),
		slog.String("app", app), slog.Int("lock_key_bytes", len(key)), slog.Bool("freed", freed))
	http.Redirect(w, r, h.cfg.Prefix+"/locks", http.StatusSeeOther)
}

// pageNames are the dashboard's own pages, in navigation order.
var pageNames = []string{"cluster", "channels", "locks", "caches"}
