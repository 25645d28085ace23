"""Static planning: budgets (bits per weight, bytes, BOPs, energy, latency) and the one
exact multiple-choice knapsack that picks a mode per op under them."""

from aprec.planning.planner import Budget as Budget
from aprec.planning.planner import FrontPoint as FrontPoint
from aprec.planning.planner import InfeasibleBudget as InfeasibleBudget
from aprec.planning.planner import Plan as Plan
from aprec.planning.planner import default_budgets as default_budgets
from aprec.planning.planner import pareto_front as pareto_front
from aprec.planning.planner import parse_budget as parse_budget
from aprec.planning.planner import plan as plan
