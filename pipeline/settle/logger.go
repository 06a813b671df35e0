package settle

import (
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
)

// RouterLogger adapts log for Watermill's router. The router logs every message at Trace and
// Debug, building its fields before the level is checked (3–4% of a worker's CPU); those
// levels are dropped here, and its Info lines (handler start and stop) become Debug.
func RouterLogger(log *slog.Logger) watermill.LoggerAdapter {
	return quietLogger{watermill.NewSlogLoggerWithLevelMapping(log, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})}
}

type quietLogger struct{ watermill.LoggerAdapter }

func (quietLogger) Debug(string, watermill.LogFields) {}
func (quietLogger) Trace(string, watermill.LogFields) {}
func (l quietLogger) With(f watermill.LogFields) watermill.LoggerAdapter {
	return quietLogger{l.LoggerAdapter.With(f)}
}
