/**
 * The note `serve` and `check` print when an anomaly rule suspends agents and no admin API is
 * configured: a suspension outlives restarts and only the admin API lifts it (README, Anomaly
 * detection), so an agent stuck on a denied route would be locked out with no command that can let it
 * back in (found by the ops walkthrough on the shipped config, before it set denial_burst to alert).
 */
import type { AirlockConfig } from '../config/types.js';

/** The anomaly rules that suspend an agent when they fire, by their names in the config: every entry with an `action`, so a rule added later is counted too. */
function suspendingRules(config: AirlockConfig): string[] {
  if (!config.anomalies.enabled) return [];
  return Object.entries(config.anomalies)
    .filter(([, rule]) => typeof rule === 'object' && rule !== null && 'action' in rule && rule.action === 'suspend')
    .map(([name]) => name);
}

/** The note's lines, or none when no rule suspends or an admin API is configured. */
export function suspensionWithoutAdminNote(config: AirlockConfig): string[] {
  const suspending = suspendingRules(config);
  if (config.admin !== null || suspending.length === 0) return [];
  return [
    `Note: ${suspending.length === 1 ? 'anomaly rule' : 'anomaly rules'} ${suspending.join(', ')} ${suspending.length === 1 ? 'suspends' : 'suspend'} an agent (${suspending.map((name) => `anomalies.${name}.action: suspend`).join(', ')}), and only the admin API`,
    'lifts a suspension (`npx airlock restore agent NAME`), which this config does not configure. Add an admin block',
    '(listen, tokens) and restart (a reload does not open a new admin listener), or set the action to alert.',
  ];
}
