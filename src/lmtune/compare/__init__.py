"""`lmtune compare`: strategies and baselines side by side on one task, with a leaderboard and an HTML report."""
