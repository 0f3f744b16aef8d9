#!/usr/bin/env node
// Offline KQL checker: parses and analyzes queries with Microsoft's Kusto language service
// (@kusto/language-service-next, pinned in package.json) against the Application Insights tables the app writes
// to, so a misspelt column, an unknown table or a syntax error is found before Azure runs the query.
//
// Input (stdin): JSON [{"id": "...", "query": "..."}]. Output (stdout): JSON [{"id", "diagnostics": [{severity,
// code, message, start, length}]}]. Exit 0 when the check ran (whatever it found), 2 on bad input.
//
// The schemas are the documented columns of the classic Application Insights tables (what alert rules scoped to
// the component and the queries in docs/ use) and of their Log Analytics workspace tables (App*).
'use strict';

require('@kusto/language-service-next/bridge.min.js');
require('@kusto/language-service-next/Kusto.Language.Bridge.min.js');

/* global Kusto */
const K = Kusto.Language;
const S = K.Symbols;

const CLASSIC_COMMON =
  'timestamp:datetime, itemType:string, itemId:string, itemCount:int, customDimensions:dynamic, ' +
  'customMeasurements:dynamic, operation_Name:string, operation_Id:string, operation_ParentId:string, ' +
  'operation_SyntheticSource:string, session_Id:string, user_Id:string, user_AuthenticatedId:string, ' +
  'user_AccountId:string, application_Version:string, client_Type:string, client_Model:string, ' +
  'client_OS:string, client_IP:string, client_City:string, client_StateOrProvince:string, ' +
  'client_CountryOrRegion:string, client_Browser:string, cloud_RoleName:string, cloud_RoleInstance:string, ' +
  'appId:string, appName:string, iKey:string, sdkVersion:string';

const WORKSPACE_COMMON =
  'TenantId:string, TimeGenerated:datetime, Properties:dynamic, Measurements:dynamic, OperationName:string, ' +
  'OperationId:string, ParentId:string, SyntheticSource:string, SessionId:string, UserId:string, ' +
  'UserAuthenticatedId:string, UserAccountId:string, AppVersion:string, AppRoleName:string, ' +
  'AppRoleInstance:string, ClientType:string, ClientModel:string, ClientOS:string, ClientIP:string, ' +
  'ClientCity:string, ClientStateOrProvince:string, ClientCountryOrRegion:string, ClientBrowser:string, ' +
  'ResourceGUID:string, IKey:string, SDKVersion:string, ItemCount:int, ReferencedItemId:string, ' +
  'ReferencedType:string, SourceSystem:string, Type:string, _ResourceId:string';

const TABLES = {
  customEvents: `name:string, ${CLASSIC_COMMON}`,
  dependencies:
    'id:string, target:string, type:string, name:string, data:string, success:bool, resultCode:string, ' +
    `duration:real, performanceBucket:string, ${CLASSIC_COMMON}`,
  requests:
    'id:string, source:string, name:string, url:string, success:bool, resultCode:string, duration:real, ' +
    `performanceBucket:string, ${CLASSIC_COMMON}`,
  traces: `message:string, severityLevel:int, ${CLASSIC_COMMON}`,
  exceptions:
    'problemId:string, handledAt:string, type:string, message:string, assembly:string, method:string, ' +
    'outerType:string, outerMessage:string, outerAssembly:string, outerMethod:string, innermostType:string, ' +
    'innermostMessage:string, innermostAssembly:string, innermostMethod:string, severityLevel:int, ' +
    `details:dynamic, ${CLASSIC_COMMON}`,
  AppEvents: `Name:string, ${WORKSPACE_COMMON}`,
  AppDependencies:
    'Id:string, Target:string, DependencyType:string, Name:string, Data:string, Success:bool, ' +
    `ResultCode:string, DurationMs:real, PerformanceBucket:string, ${WORKSPACE_COMMON}`,
  AppRequests:
    'Id:string, Source:string, Name:string, Url:string, Success:bool, ResultCode:string, DurationMs:real, ' +
    `PerformanceBucket:string, ${WORKSPACE_COMMON}`,
  AppTraces: `Message:string, SeverityLevel:int, ${WORKSPACE_COMMON}`,
  AppExceptions:
    'ProblemId:string, HandledAt:string, ExceptionType:string, Assembly:string, Method:string, ' +
    'OuterType:string, OuterMessage:string, OuterAssembly:string, OuterMethod:string, InnermostType:string, ' +
    'InnermostMessage:string, InnermostAssembly:string, InnermostMethod:string, SeverityLevel:int, ' +
    `Details:dynamic, Message:string, ${WORKSPACE_COMMON}`,
};

function globals() {
  const tables = Object.entries(TABLES).map(([name, schema]) => new S.TableSymbol.$ctor7(name, `(${schema})`, ''));
  const database = new S.DatabaseSymbol.ctor('applicationinsights', tables);
  return K.GlobalState.Default.WithDatabase(database);
}

function check(items) {
  const state = globals();
  return items.map(({ id, query }) => {
    const code = K.KustoCode.ParseAndAnalyze(query, state);
    const found = code.GetDiagnostics();
    const diagnostics = [];
    for (let i = 0; i < found.Count; i++) {
      const d = found.getItem(i);
      diagnostics.push({ severity: d.Severity, code: d.Code, message: d.Message, start: d.Start, length: d.Length });
    }
    return { id, diagnostics };
  });
}

function main() {
  let input = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk) => {
    input += chunk;
  });
  process.stdin.on('end', () => {
    let items;
    try {
      items = JSON.parse(input);
      if (!Array.isArray(items) || !items.every((x) => typeof x.id === 'string' && typeof x.query === 'string')) {
        throw new Error('expected [{"id": string, "query": string}, ...]');
      }
    } catch (error) {
      process.stderr.write(`kql-check: bad input: ${error.message}\n`);
      process.exit(2);
    }
    process.stdout.write(JSON.stringify(check(items)));
  });
}

if (require.main === module) {
  main();
}

module.exports = { check, TABLES };
