package workload

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy is a TCP forwarder on 127.0.0.1 in front of the test server that
// can cut every connection on command: the client sees its socket die
// mid-call while the server may still commit, the case no client-side
// check can resolve.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns map[net.Conn]bool
	// cutAfter > 0: cut everything once that many bytes went from the
	// server to clients (counted across connections) since ArmBytes.
	cutAfter atomic.Int64
	fromSrv  atomic.Int64
	cuts     atomic.Int64
	// commitAck: cut before the server's first idle ReadyForQuery that
	// follows migrate_apply's progress notices on a connection, i.e. after
	// the server committed and before the client can know.
	commitAck atomic.Bool
	applySent atomic.Bool
	wg        sync.WaitGroup
}

// NewProxy listens on a free 127.0.0.1 port and forwards to target
// (host:port); it is closed when the test ends.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port is the proxy's port.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// ServerBytes is how many bytes went from the server to clients since the
// last ArmBytes (or since the start).
func (p *Proxy) ServerBytes() int64 { return p.fromSrv.Load() }

// Cuts is how many times the proxy cut its connections.
func (p *Proxy) Cuts() int64 { return p.cuts.Load() }

// ArmBytes resets the byte counter and cuts every connection once n more
// bytes went from the server to clients (n <= 0: never).
func (p *Proxy) ArmBytes(n int64) {
	p.fromSrv.Store(0)
	p.cutAfter.Store(n)
}

// ArmCommitAck makes the proxy cut every connection right before the
// client would learn that a migrate_apply call committed: the outcome the
// client cannot know, by construction.
func (p *Proxy) ArmCommitAck() { p.commitAck.Store(true) }

// Cut closes both sides of every open connection at once. New connections
// are still accepted.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.conns) > 0 {
		p.cuts.Add(1)
	}
	for c := range p.conns {
		// SetLinger(0): an RST rather than a FIN, as when a middlebox or a
		// NAT table forgets the connection.
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
		delete(p.conns, c)
	}
}

// Close stops accepting and cuts everything.
func (p *Proxy) Close() {
	_ = p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[s] = true, true
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(s, c)
		go p.fromServer(c, s)
	}
}

// pipe copies client bytes to the server as they come, noting whether a
// migrate_apply call went by (the precheck calls migrate_plan).
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer p.drop(src, dst)
	const marker = "migrate_apply"
	buf := make([]byte, 32<<10)
	var tail []byte // the end of the previous read: the marker may straddle two
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.applySent.Load() {
				window := append(tail, buf[:n]...)
				if bytes.Contains(window, []byte(marker)) {
					p.applySent.Store(true)
				}
				tail = append(tail[:0], window[max(0, len(window)-len(marker)):]...)
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

// ApplySent reports whether a client sent a migrate_apply call through
// the proxy since the last ResetApplySent.
func (p *Proxy) ApplySent() bool { return p.applySent.Load() }

// ResetApplySent clears ApplySent.
func (p *Proxy) ResetApplySent() { p.applySent.Store(false) }

func (p *Proxy) drop(a, b net.Conn) {
	p.mu.Lock()
	delete(p.conns, a)
	delete(p.conns, b)
	p.mu.Unlock()
	_ = a.Close()
	_ = b.Close()
}

// fromServer copies server messages to the client one protocol message at
// a time (type byte, int32 length; the tests never negotiate SSL, so the
// stream is all typed messages), counting bytes for ArmBytes and watching
// for the acknowledgement of a migrate_apply call for ArmCommitAck.
func (p *Proxy) fromServer(dst, src net.Conn) {
	defer p.wg.Done()
	defer p.drop(src, dst)
	r := bufio.NewReaderSize(src, 64<<10)
	sawProgress := false
	for {
		hdr := make([]byte, 5, 5+512)
		if _, err := io.ReadFull(r, hdr); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(hdr[1:])) - 4
		if n < 0 {
			return
		}
		msg := append(hdr, make([]byte, n)...)
		if _, err := io.ReadFull(r, msg[5:]); err != nil {
			return
		}
		switch msg[0] {
		case 'N':
			if bytes.Contains(msg, []byte("pgmig: applying version")) {
				sawProgress = true
			}
		case 'Z':
			// The first ReadyForQuery with status 'I' (idle, no transaction
			// open) after migrate_apply's progress notices: the server has
			// committed — migrate_apply's implicit transaction for psql, the
			// COMMIT after it for the library, which calls it inside BEGIN.
			if sawProgress && len(msg) == 6 && msg[5] == 'I' && p.commitAck.CompareAndSwap(true, false) {
				p.Cut()
				return
			}
		}
		total := p.fromSrv.Add(int64(len(msg)))
		if limit := p.cutAfter.Load(); limit > 0 && total >= limit {
			// Forward only up to the limit: the client gets a message
			// cut in the middle, then nothing.
			keep := int64(len(msg)) - (total - limit)
			_, _ = dst.Write(msg[:max(0, keep)])
			p.cutAfter.Store(0)
			p.Cut()
			return
		}
		if _, err := dst.Write(msg); err != nil {
			return
		}
	}
}

// URL is connString (a URL) pointed at the proxy instead of the server.
func (p *Proxy) URL(connString string) string {
	u, err := url.Parse(connString)
	if err != nil {
		panic(fmt.Sprintf("workload: %v", err))
	}
	u.Host = p.Addr()
	return u.String()
}
