// Package faultproxy is an in-test TCP proxy that injects the network faults
// PostgreSQL clients meet in production, for tests of pgcoord's failure model:
//
//   - [Proxy.Cut] closes every open flow at once (a reset connection);
//   - [Proxy.Freeze] makes every open flow silent in both directions while
//     both sockets stay open (a silent partition: no RST reaches either side);
//     [Proxy.Thaw] lets the bytes move again;
//   - [Proxy.SetTarget] sends new connections to another server (a DNS name
//     or virtual IP moved during a switchover), while open flows stay where
//     they are until they are cut;
//   - [Proxy.Blackhole] accepts new connections but never forwards them (a
//     connect that hangs until the client's own timeout).
//
// Point a client at the proxy with [Proxy.URL]. The proxy listens on loopback
// only. Every method is safe for concurrent use.
//
// A frozen flow is silent to the two programs, not to their kernels: the
// proxy's sockets still acknowledge TCP segments, so server-side TCP timeouts
// (tcp_user_timeout, keepalives) do not fire through a frozen flow. Tests of
// those settings need a real packet drop; tests of what the client does when
// its peer goes quiet, and of how the library ends the orphaned server
// session, work here.
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
)

// Proxy forwards TCP connections from a loopback listener to a target address.
type Proxy struct {
	ln   net.Listener
	done chan struct{}
	wg   sync.WaitGroup // accept loop and every flow's copy goroutines

	mu        sync.Mutex // guards the fields below and every flow's frozen flag
	cond      *sync.Cond // signalled when a flow thaws or the proxy closes
	target    string
	blackhole bool
	flows     map[*flow]struct{}
	accepted  int
	closed    bool
}

// flow is one proxied connection: the client's socket and the server's.
type flow struct {
	p              *Proxy
	client, server net.Conn
	frozen, dead   bool // guarded by Proxy.mu
	closeOnce      sync.Once
}

// New starts a proxy to target ("host:port") on a free loopback port. Close
// stops it.
func New(target string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("faultproxy: target %q: %w", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{ln: ln, done: make(chan struct{}), target: target, flows: map[*flow]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Start is New for a test: it fails the test on error and closes the proxy
// when the test ends.
func Start(tb testing.TB, target string) *Proxy {
	tb.Helper()
	p, err := New(target)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

// StartFor starts a proxy to the host and port of a postgres:// connection
// string and returns it with the same connection string pointed at the proxy.
func StartFor(tb testing.TB, connString string) (*Proxy, string) {
	tb.Helper()
	target, err := HostPort(connString)
	if err != nil {
		tb.Fatal(err)
	}
	p := Start(tb, target)
	return p, p.URL(connString)
}

// HostPort returns "host:port" of a postgres:// or postgresql:// URL.
func HostPort(connString string) (string, error) {
	u, err := url.Parse(connString)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", errors.New("faultproxy: want a postgres:// URL")
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "5432"
	}
	return net.JoinHostPort(host, port), nil
}

// Addr is the proxy's "host:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL returns connString (a postgres:// URL) with its host and port replaced
// by the proxy's. It panics on a connection string that is not a URL, which
// is a bug in the test.
func (p *Proxy) URL(connString string) string {
	u, err := url.Parse(connString)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		panic("faultproxy: URL needs a postgres:// URL")
	}
	u.Host = p.Addr()
	return u.String()
}

// SetTarget sends connections accepted from now on to target ("host:port").
// Open flows keep their server until they end or are cut.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

// Blackhole makes new connections hang (on) or work again (off). A connection
// accepted while on is never forwarded; it ends when the client gives up, the
// proxy is closed, or [Proxy.Cut] runs.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackhole = on
}

// Cut closes every open flow, both sockets, and returns how many it closed.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	flows := make([]*flow, 0, len(p.flows))
	for f := range p.flows {
		flows = append(flows, f)
	}
	p.mu.Unlock()
	for _, f := range flows {
		f.close()
	}
	return len(flows)
}

// Freeze stops every open flow in both directions without closing it and
// returns how many it froze. Bytes already read are held and delivered after
// [Proxy.Thaw]. Flows opened later are not frozen.
func (p *Proxy) Freeze() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for f := range p.flows {
		f.frozen = true
	}
	return len(p.flows)
}

// Thaw lets every frozen flow move again.
func (p *Proxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for f := range p.flows {
		f.frozen = false
	}
	p.cond.Broadcast()
}

// Flows returns how many flows are open now.
func (p *Proxy) Flows() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.flows)
}

// Accepted returns how many connections the proxy has accepted in all.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Close stops accepting, closes every flow and waits for the proxy's
// goroutines. It is safe to call more than once.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.done)
	p.cond.Broadcast()
	p.mu.Unlock()
	_ = p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		p.accepted++
		target, blackhole := p.target, p.blackhole
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(c, target, blackhole)
	}
}

// serve connects one client to target and copies bytes both ways until
// either side ends or the flow is cut.
func (p *Proxy) serve(client net.Conn, target string, blackhole bool) {
	defer p.wg.Done()
	if blackhole {
		// Hold the connection open, silent, until the client leaves or the
		// proxy closes.
		p.track(&flow{p: p, client: client, server: nopConn{}}, func(f *flow) {
			_, _ = io.Copy(io.Discard, client)
		})
		return
	}
	server, err := net.Dial("tcp", target)
	if err != nil {
		_ = client.Close()
		return
	}
	p.track(&flow{p: p, client: client, server: server}, func(f *flow) {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); p.pipe(f, server, client) }()
		go func() { defer wg.Done(); p.pipe(f, client, server) }()
		wg.Wait()
	})
}

// track registers f while run runs, and closes it afterwards.
func (p *Proxy) track(f *flow, run func(*flow)) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		f.close()
		return
	}
	p.flows[f] = struct{}{}
	p.mu.Unlock()
	run(f)
	f.close()
	p.mu.Lock()
	delete(p.flows, f)
	p.mu.Unlock()
}

// pipe copies from src to dst, holding each chunk while the flow is frozen.
// Closing the flow ends both directions.
func (p *Proxy) pipe(f *flow, dst, src net.Conn) {
	defer f.close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.waitThawed(f) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// waitThawed blocks while f is frozen; it returns false when the proxy closed
// or the flow was cut meanwhile.
func (p *Proxy) waitThawed(f *flow) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for f.frozen && !f.dead && !p.closed {
		p.cond.Wait()
	}
	return !f.dead && !p.closed
}

func (f *flow) close() {
	f.closeOnce.Do(func() {
		f.p.mu.Lock()
		f.dead = true
		f.p.cond.Broadcast()
		f.p.mu.Unlock()
		_ = f.client.Close()
		_ = f.server.Close()
	})
}

// nopConn stands for the missing server side of a blackholed flow.
type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }
