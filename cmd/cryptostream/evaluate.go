package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"cryptostream/forecast"
	"cryptostream/forecast/evaluation"
)

func cmdEvaluate(ctx context.Context, args []string, e *env) error {
	var (
		point  bool
		readme string
	)
	fs := newFlagSet("evaluate", "Runs the forecast evaluation on candle files (Kraken OHLCVT or header CSV), past\nonly: the point model walk-forward against no-change and the last return, the\nvolatility forecast against the naive ones (QLIKE, Diebold-Mariano), and the\nintervals' coverage and interval score against the fixed-spread rule, per horizon.\nPrints Markdown; --readme rewrites the generated section of that file instead.\n\nUsage: cryptostream evaluate [flags] FILE...", e)
	fs.boolVar(&point, "point", "", true, "evaluate the point model too (one fit per day of data: the slow part)")
	fs.stringVar(&readme, "readme", "", "", "rewrite the generated section of this Markdown file with the report")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(fs.errs) > 0 {
		return fmt.Errorf("environment: %v", fs.errs)
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("give at least one candle file")
	}
	var reps []evaluation.Report
	var b strings.Builder
	for _, path := range fs.Args() {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := evaluation.ReadFile(path)
		if err != nil {
			return err
		}
		rep, err := evaluation.Evaluate(f, evaluation.Options{Point: point, Rule: forecast.DefaultRule()})
		if err != nil {
			return fmt.Errorf("evaluate %s: %w", path, err)
		}
		reps = append(reps, rep)
		b.WriteString(rep.Markdown())
	}
	b.WriteString("#### Targets at 15 and 60 minutes\n\n")
	b.WriteString(evaluation.TargetsMarkdown(reps))
	if readme == "" {
		_, err := fmt.Fprint(e.stdout, b.String())
		return err
	}
	doc, err := os.ReadFile(readme)
	if err != nil {
		return err
	}
	out, err := evaluation.ReplaceSection(string(doc), b.String())
	if err != nil {
		return err
	}
	return os.WriteFile(readme, []byte(out), 0o644)
}
