package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"time"
)

type point struct{ x, y, lo, hi float64 }

type series struct {
	name   string
	color  color.RGBA
	points []point
}

var contenderColors = map[string]color.RGBA{
	cPhysical: {90, 90, 90, 255},
	cLib:      {31, 100, 200, 255},
	cCLI:      {20, 160, 120, 255},
	cTern:     {215, 70, 40, 255},
}

// plot draws the realistic workload's time against N (left) and the time
// per migration against N (right, flat = linear), medians with min–max
// bars, log scales.
func (r *report) plot(path string) error {
	ss := r.scaleScenarios()
	if len(ss) < 2 {
		return nil
	}
	var total, per []series
	for _, c := range []string{cPhysical, cLib, cCLI, cTern} {
		st, sp := series{name: c, color: contenderColors[c]}, series{name: c, color: contenderColors[c]}
		for _, s := range ss {
			x := s.stats(c)
			if x.n == 0 {
				continue
			}
			ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
			n := float64(s.n)
			st.points = append(st.points, point{n, ms(x.median), ms(x.min), ms(x.max)})
			sp.points = append(sp.points, point{n, ms(x.median) / n * 1000, ms(x.min) / n * 1000, ms(x.max) / n * 1000})
		}
		if len(st.points) > 0 {
			total, per = append(total, st), append(per, sp)
		}
	}
	const w, h = 1440, 640
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	fillRect(img, 0, 0, w, h, color.White)
	title := "pgmig vs tern vs physical limit: fresh apply of N realistic DDL migrations (fsync on, loopback)"
	drawText(img, (w-textWidth(title, 2))/2, 14, title, 2, color.Black)
	panel(img, image.Rect(110, 70, 670, 560), "total time", total, fmtMillis, true, "N (migrations)", nil)
	panel(img, image.Rect(810, 70, 1370, 560), "time per migration (flat = linear)", per, fmtMicrosAxis, false, "N (migrations)", nil)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return png.Encode(f, img)
}

func fmtMillis(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%g s", v/1000)
	default:
		return fmt.Sprintf("%g ms", v)
	}
}

func fmtMicrosAxis(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%g ms", v/1000)
	}
	return fmt.Sprintf("%g µs", v)
}

// panel draws series on log-log axes: x by decades, or, with xticks, from
// the first tick to the last with a grid line at each.
func panel(img *image.RGBA, rc image.Rectangle, title string, ss []series, yfmt func(float64) string, legend bool, xlabel string, xticks []float64) {
	minX, maxX, minY, maxY := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for _, p := range s.points {
			minX, maxX = math.Min(minX, p.x), math.Max(maxX, p.x)
			minY, maxY = math.Min(minY, p.lo), math.Max(maxY, p.hi)
		}
	}
	lx0, lx1 := math.Floor(math.Log10(minX)), math.Ceil(math.Log10(maxX))
	ly0, ly1 := math.Floor(math.Log10(minY)), math.Ceil(math.Log10(maxY))
	if len(xticks) > 1 {
		lx0, lx1 = math.Log10(xticks[0]), math.Log10(xticks[len(xticks)-1])
	}
	if lx1 == lx0 {
		lx1++
	}
	if ly1 == ly0 {
		ly1++
	}
	px := func(x float64) int {
		return rc.Min.X + int(math.Round((math.Log10(x)-lx0)/(lx1-lx0)*float64(rc.Dx())))
	}
	py := func(y float64) int {
		return rc.Max.Y - int(math.Round((math.Log10(y)-ly0)/(ly1-ly0)*float64(rc.Dy())))
	}
	grid, minor, axis := color.RGBA{200, 200, 200, 255}, color.RGBA{235, 235, 235, 255}, color.RGBA{60, 60, 60, 255}
	for d := ly0; d <= ly1; d++ {
		v := math.Pow(10, d)
		for _, m := range []float64{2, 5} {
			if d < ly1 {
				hline(img, rc.Min.X, rc.Max.X, py(v*m), minor)
			}
		}
		hline(img, rc.Min.X, rc.Max.X, py(v), grid)
		lbl := yfmt(v)
		drawText(img, rc.Min.X-10-textWidth(lbl, 2), py(v)-7, lbl, 2, axis)
	}
	for d := lx0; d <= lx1 && len(xticks) <= 1; d++ {
		v := math.Pow(10, d)
		for _, m := range []float64{2, 5} {
			if d < lx1 {
				vline(img, px(v*m), rc.Min.Y, rc.Max.Y, minor)
			}
		}
		vline(img, px(v), rc.Min.Y, rc.Max.Y, grid)
		lbl := fmt.Sprintf("%g", v)
		drawText(img, px(v)-textWidth(lbl, 2)/2, rc.Max.Y+10, lbl, 2, axis)
	}
	for _, v := range xticks {
		vline(img, px(v), rc.Min.Y, rc.Max.Y, grid)
		lbl := fmt.Sprintf("%g", v)
		drawText(img, px(v)-textWidth(lbl, 2)/2, rc.Max.Y+10, lbl, 2, axis)
	}
	hline(img, rc.Min.X, rc.Max.X, rc.Max.Y, axis)
	vline(img, rc.Min.X, rc.Min.Y, rc.Max.Y, axis)
	drawText(img, rc.Min.X+(rc.Dx()-textWidth(title, 2))/2, rc.Min.Y-26, title, 2, color.Black)
	xl := xlabel
	drawText(img, rc.Min.X+(rc.Dx()-textWidth(xl, 2))/2, rc.Max.Y+36, xl, 2, axis)
	for _, s := range ss {
		for i, p := range s.points {
			x := px(p.x)
			vline(img, x, py(p.hi), py(p.lo), s.color)
			hline(img, x-5, x+5, py(p.hi), s.color)
			hline(img, x-5, x+5, py(p.lo), s.color)
			fillRect(img, x-4, py(p.y)-4, 9, 9, s.color)
			if i > 0 {
				q := s.points[i-1]
				line(img, px(q.x), py(q.y), x, py(p.y), s.color)
			}
		}
	}
	if legend {
		y := rc.Min.Y + 12
		for _, s := range ss {
			fillRect(img, rc.Min.X+14, y+3, 26, 6, s.color)
			drawText(img, rc.Min.X+50, y-1, s.name, 2, color.Black)
			y += 24
		}
	}
}

func hline(img *image.RGBA, x0, x1, y int, c color.Color) {
	for x := x0; x <= x1; x++ {
		img.Set(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.Color) {
	if y0 > y1 {
		y0, y1 = y1, y0
	}
	for y := y0; y <= y1; y++ {
		img.Set(x, y, c)
	}
}

// line: Bresenham, 3 px thick.
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := 1, 1
	if x0 > x1 {
		sx = -1
	}
	if y0 > y1 {
		sy = -1
	}
	e := dx + dy
	for {
		fillRect(img, x0-1, y0-1, 3, 3, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
