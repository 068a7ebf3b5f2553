package main

import (
	"net"
	"sync"
	"time"
)

// delayProxy forwards TCP connections to upstream, delivering every chunk
// read in either direction oneWay later than it was read, in order. Chunks
// are pipelined (a chunk does not wait for the previous one's delay to end
// before its own starts), so it models a link with round-trip time
// 2*oneWay and ample bandwidth: what a database in another availability
// zone looks like, as opposed to loopback.
type delayProxy struct {
	ln       net.Listener
	upstream string
	oneWay   time.Duration
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func startProxy(upstream string, rtt time.Duration) (*delayProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &delayProxy{ln: ln, upstream: upstream, oneWay: rtt / 2, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *delayProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *delayProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *delayProxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *delayProxy) serve() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			// The connection set-up itself crosses the link too: the TCP
			// handshake is one round trip.
			time.Sleep(2 * p.oneWay)
			server, err := net.Dial("tcp", p.upstream)
			if err != nil {
				client.Close()
				return
			}
			noDelay(client)
			noDelay(server)
			p.track(client, true)
			p.track(server, true)
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); p.pipe(server, client) }()
			go func() { defer wg.Done(); p.pipe(client, server) }()
			wg.Wait()
			p.track(client, false)
			p.track(server, false)
		}()
	}
}

func noDelay(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
}

type chunk struct {
	due  time.Time
	data []byte
}

// pipe copies src to dst, each chunk oneWay after it was read. When either
// side ends, both are closed (the other pipe then ends too).
func (p *delayProxy) pipe(dst, src net.Conn) {
	q := make(chan chunk, 1<<14)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 64<<10)
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{due: time.Now().Add(p.oneWay), data: buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		if d := time.Until(c.due); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(c.data); err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	for range q { // let the reader finish
	}
}
