"""What training costs: tokens and FLOPs at the paper's scale, timed training steps, the cost chapter's tables."""
