"""Static planning: budgets (bits per weight, bytes, BOPs, energy, latency) and the one
exact multiple-choice knapsack that picks a mode per op under them.

Modules behind this face: ``budgets`` — budget kinds and their per-(op, mode) costs;
``knapsack`` — the exact solver (also the RPM oracle's); ``planner`` — plans and the
measured Pareto front.
"""

from aprec.planning import knapsack as knapsack
from aprec.planning.budgets import Budget as Budget
from aprec.planning.budgets import InfeasibleBudget as InfeasibleBudget
from aprec.planning.budgets import budget_used as budget_used
from aprec.planning.budgets import cost_table as cost_table
from aprec.planning.budgets import parse_budget as parse_budget
from aprec.planning.planner import FrontPoint as FrontPoint
from aprec.planning.planner import Plan as Plan
from aprec.planning.planner import default_budgets as default_budgets
from aprec.planning.planner import dominated_by_uniform as dominated_by_uniform
from aprec.planning.planner import pareto_front as pareto_front
from aprec.planning.planner import plan as plan
