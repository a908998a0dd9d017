"""The offline half: the raw events table, point-in-time training sets, backfill and
online/offline consistency, all computed with the engine's own fold and merge
(``fastbreak.engine.fold``)."""
